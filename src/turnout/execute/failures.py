"""Small decisions about failed attempts: retry the same target? wait how long?"""

from __future__ import annotations

from turnout.config.schema import RetryConfig
from turnout.model import ErrorClass, UpstreamError

# failures worth another try at the same model (transient by nature)
_TRANSIENT = {
    ErrorClass.RATE_LIMITED,
    ErrorClass.OVERLOADED,
    ErrorClass.SERVER_ERROR,
    ErrorClass.TIMEOUT,
    ErrorClass.CONNECTION,
    ErrorClass.STREAM_BROKEN,
}


def timeout_error(which: str) -> UpstreamError:
    return UpstreamError(ErrorClass.TIMEOUT, f"{which} timeout", detail=which)


def should_retry_same_target(
    error: UpstreamError, attempt: int, retry: RetryConfig, guard_retries: int = 0
) -> bool:
    if error.error_class is ErrorClass.INVALID_OUTPUT:
        return attempt < guard_retries  # models often get it right on a second try
    if attempt + 1 >= retry.attempts or error.error_class not in _TRANSIENT:
        return False
    # a Retry-After longer than we are willing to wait: the next target is the better bet
    return error.retry_after is None or error.retry_after <= retry.max_backoff


def backoff_delay(error: UpstreamError, attempt: int, retry: RetryConfig) -> float:
    delay = min(retry.backoff * (2**attempt), retry.max_backoff)
    if error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return delay
