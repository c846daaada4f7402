"""Status-code classification and Retry-After parsing shared by every dialect."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from turnout.model import ErrorClass

_CONTEXT_HINTS = (
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "prompt is too long",
    "too many tokens",
    "reduce the length",
)


def class_for_status(status: int) -> ErrorClass:
    if status in (401, 403, 404):
        # the key, or the model name in our own config, was rejected: misconfigured
        return ErrorClass.AUTH
    if status == 402:
        return ErrorClass.QUOTA
    if status == 429:
        return ErrorClass.RATE_LIMITED
    if status in (408, 504):
        return ErrorClass.TIMEOUT
    if status == 529:
        return ErrorClass.OVERLOADED
    if status == 409 or status >= 500:
        return ErrorClass.SERVER_ERROR
    return ErrorClass.CLIENT_ERROR


def mentions_context_length(*texts: str | None) -> bool:
    return any(hint in text.lower() for text in texts if text for hint in _CONTEXT_HINTS)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """`name` (lower case) looked up case-insensitively, whatever kind of mapping came in."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    millis = _header(headers, "retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
