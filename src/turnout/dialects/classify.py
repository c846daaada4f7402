"""Status-code classification and Retry-After parsing shared by every dialect."""

from __future__ import annotations

import email.utils
import math
import re
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


# A 403 that refuses this request's content (a moderation flag or a policy guardrail) is
# the client's to see, not a fact about the model or the key: OpenRouter documents 403 as
# "your chosen model requires moderation and your input was flagged" (error.metadata holds
# `reasons` and `flagged_input`), and its guardrails answer "Request blocked: prompt
# injection patterns detected"; OpenAI-compatible hosts word it as a content policy.
_CONTENT_REFUSAL_HINTS = (
    "moderation",
    # the input, not the account: "your account was flagged" is the key's problem
    "input was flagged",
    "flagged input",
    "prompt was flagged",
    "content was flagged",
    "request was flagged",
    "content policy",
    "content_policy",
    "content filter",
    "content_filter",
    "usage policy",
    "usage policies",
    "guardrail",
    "prompt injection",
    "request blocked",
    "safety policy",
)


def class_for_status(status: int, *texts: str | None) -> ErrorClass:
    """The class of an HTTP error status; `texts` (message, code, type) refine a 403.

    401 and 403 both become AUTH, but the health engine scopes them differently: a 401 is
    the key (the whole provider is misconfigured), a 403 or 404 is this model only (no
    access to it, or no such model), since one request's 403 must never take a provider
    out. A 403 about the request's content is the client's (CLIENT_ERROR)."""
    if status == 403 and refuses_content(*texts):
        return ErrorClass.CLIENT_ERROR
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


def refuses_content(*texts: str | None) -> bool:
    """Whether an error's words say the request's content was refused (see above)."""
    return any(hint in text.lower() for text in texts if text for hint in _CONTENT_REFUSAL_HINTS)


def flagged_by_moderation(metadata: object) -> bool:
    """OpenRouter's moderation error: `metadata: {reasons: [...], flagged_input: "..."}`."""
    return isinstance(metadata, Mapping) and bool(
        metadata.get("reasons") or metadata.get("flagged_input")
    )


def mentions_context_length(*texts: str | None) -> bool:
    return any(hint in text.lower() for text in texts if text for hint in _CONTEXT_HINTS)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """`name` (lower case) looked up case-insensitively, whatever kind of mapping came in."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _finite(value: str) -> float:
    # "inf", "1e400" or 400 nines parse as infinity: no upstream may ask to wait forever
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(value)
    return seconds


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    millis = _header(headers, "retry-after-ms")
    if millis:
        try:
            return max(0.0, _finite(millis) / 1000)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if not value:
        return None
    try:
        return max(0.0, _finite(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# How upstreams say a request's max_tokens is more than the model can write, and the number
# they say it can (a group named `limit`, or `window` less `prompt`)
_OUTPUT_LIMITS = [
    # Anthropic: "max_tokens: 128000 > 64000, which is the maximum allowed number of output
    # tokens for claude-haiku-4-5-20251001"
    re.compile(r"max_tokens: ?\d+ ?> ?(?P<limit>\d+), which is the maximum"),
    # OpenAI: "max_tokens is too large: 128000. This model supports at most 16384 completion
    # tokens, whereas you provided 128000."
    re.compile(r"supports at most (?P<limit>\d+) (?:completion|output) tokens"),
    # Groq and others: "`max_tokens` must be less than or equal to `8192`"
    re.compile(
        r"max_(?:completion_)?tokens`? must be (?:less than or equal to|<=|at most) `?(?P<limit>\d+)"
    ),
    # vLLM and OpenAI's older wording: "This model's maximum context length is 8192 tokens.
    # However, you requested 130000 tokens (2000 in the messages, 128000 in the completion)"
    re.compile(
        r"maximum context length is (?P<window>\d+) tokens.{0,80}?\((?P<prompt>\d+) in the"
        r" (?:messages|prompt)",
        re.DOTALL,
    ),
]


def output_limit_in(message: str | None) -> int | None:
    """The output limit an upstream's refusal of a too-large max_tokens states, if it does."""
    if not message or "token" not in message:
        return None
    for pattern in _OUTPUT_LIMITS:
        match = pattern.search(message)
        if match is None:
            continue
        found = match.groupdict()
        if found.get("limit") is not None:
            limit = int(found["limit"])
        else:
            limit = int(found["window"]) - int(found["prompt"])
        return limit if limit > 0 else None
    return None
