"""Gemini error bodies -> classified UpstreamErrors.

Google APIs answer `{"error": {"code", "message", "status", "details": [...]}}`
(https://ai.google.dev/gemini-api/docs/troubleshooting), sometimes wrapped in a JSON array.
`status` is the google.rpc code name; `details` may hold a QuotaFailure (which quota ran out),
a RetryInfo (`retryDelay: "13s"`) and an ErrorInfo (`reason: "API_KEY_INVALID"`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from turnout.dialects.classify import (
    class_for_status,
    mentions_context_length,
    refuses_content,
    retry_after,
)
from turnout.model import ErrorClass, UpstreamError

# "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
_TOO_LONG = re.compile(r"input token count.*exceeds the maximum", re.IGNORECASE | re.DOTALL)
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")

_BY_STATUS = {
    "PERMISSION_DENIED": ErrorClass.AUTH,
    "UNAUTHENTICATED": ErrorClass.AUTH,
    # our config names a model (or a key's project) Google does not have: misconfigured
    "NOT_FOUND": ErrorClass.AUTH,
    # "free tier is not available in your country", billing not enabled: fix the account
    "FAILED_PRECONDITION": ErrorClass.AUTH,
    "DEADLINE_EXCEEDED": ErrorClass.TIMEOUT,
    "UNAVAILABLE": ErrorClass.SERVER_ERROR,
    "INTERNAL": ErrorClass.SERVER_ERROR,
    "UNKNOWN": ErrorClass.SERVER_ERROR,
    "ABORTED": ErrorClass.SERVER_ERROR,
}


def _details(error: Mapping[str, Any]) -> list[dict[str, Any]]:
    details = error.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def retry_delay(error: Mapping[str, Any]) -> float | None:
    """Seconds from a RetryInfo detail (`"retryDelay": "13.5s"`), if there is one."""
    for detail in _details(error):
        match = _DELAY.match(str(detail.get("retryDelay") or ""))
        if match and math.isfinite(float(match.group(1))):
            return float(match.group(1))
    return None


def _daily_quota(error: Mapping[str, Any], message: str) -> bool:
    """A RESOURCE_EXHAUSTED that will not clear within minutes: a per-day quota (the free
    tier's `GenerateRequestsPerDayPerProjectPerModel-FreeTier`), a limit of 0 (no free tier
    for this model), or spent prepaid credits. Per-minute limits say "exceeded your current
    quota" too, so only the QuotaFailure's quotaId tells the two apart."""
    for detail in _details(error):
        for violation in detail.get("violations") or []:
            if not isinstance(violation, dict):
                continue
            quota = f"{violation.get('quotaId') or ''} {violation.get('quotaMetric') or ''}"
            if "perday" in quota.lower() or str(violation.get("quotaValue")) == "0":
                return True
    text = message.lower()
    return "per day" in text or "credits are depleted" in text or "limit: 0," in text


def _class(error: Mapping[str, Any], status: int | None, message: str) -> ErrorClass:
    name = str(error.get("status") or "")
    reasons = {str(d.get("reason")) for d in _details(error)}
    if status == 403 and refuses_content(message):
        return ErrorClass.CLIENT_ERROR  # this request's content was refused, not the key
    if name == "RESOURCE_EXHAUSTED" or status == 429:
        return ErrorClass.QUOTA if _daily_quota(error, message) else ErrorClass.RATE_LIMITED
    if "API_KEY_INVALID" in reasons or "api key not valid" in message.lower():
        return ErrorClass.AUTH  # Gemini answers a wrong key with 400 INVALID_ARGUMENT
    if _TOO_LONG.search(message) or mentions_context_length(message):
        return ErrorClass.CONTEXT_LENGTH
    if name == "UNAVAILABLE" and "overloaded" in message.lower():
        return ErrorClass.OVERLOADED  # "The model is overloaded. Please try again later."
    if name in _BY_STATUS:
        return _BY_STATUS[name]
    if name == "INVALID_ARGUMENT" or name == "OUT_OF_RANGE":
        return ErrorClass.CLIENT_ERROR
    return (
        class_for_status(status, message) if status and status >= 400 else ErrorClass.SERVER_ERROR
    )


def error_from_object(error: Any, status: int | None) -> UpstreamError:
    """An `error` object, from an error body or inside a 200 answer or stream."""
    if not isinstance(error, dict):
        return UpstreamError(ErrorClass.SERVER_ERROR, str(error)[:500] or "upstream error")
    code = error.get("code")
    effective = status if status and status >= 400 else code if isinstance(code, int) else None
    message = str(error.get("message") or error.get("status") or "upstream error")
    name = error.get("status")
    return UpstreamError(
        _class(error, effective, message),
        message,
        status=effective,
        retry_after=retry_delay(error),
        error_type=name if isinstance(name, str) else None,
        code=next((str(d["reason"]) for d in _details(error) if d.get("reason")), None),
    )


def decode_error(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """A non-2xx answer -> a classified UpstreamError."""
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        parsed = parsed[0]  # the error can come wrapped in an array
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = error_from_object(parsed["error"], status)
    else:
        text = body.decode("utf-8", "replace").strip()[:300] or f"HTTP {status}"
        error_class = class_for_status(status, text)
        if error_class is ErrorClass.CLIENT_ERROR and mentions_context_length(text):
            error_class = ErrorClass.CONTEXT_LENGTH
        error = UpstreamError(error_class, text, status=status)
    error.status = status
    header = retry_after(headers)
    if header is not None:  # an HTTP Retry-After wins over the body's RetryInfo
        error.retry_after = header
    return error
