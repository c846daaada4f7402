"""Small decisions about failed attempts: retry the same target? wait how long?"""

from __future__ import annotations

from turnout.config.schema import RetryConfig
from turnout.model import ErrorClass, UpstreamError
from turnout.model.errors import POLICY


def timeout_error(which: str) -> UpstreamError:
    return UpstreamError(ErrorClass.TIMEOUT, f"{which} timeout", detail=which)


def should_retry_same_target(
    error: UpstreamError, attempt: int, retry: RetryConfig, guard_retries: int = 0
) -> bool:
    if not POLICY[error.error_class].retry_same_target:
        return False
    if error.error_class is ErrorClass.INVALID_OUTPUT:
        # the output guard's own budget: models often get it right on a second try
        return attempt < guard_retries
    if attempt + 1 >= retry.attempts:
        return False
    # a Retry-After longer than we are willing to wait: the next target is the better bet
    return error.retry_after is None or error.retry_after <= retry.max_backoff


def backoff_delay(error: UpstreamError, attempt: int, retry: RetryConfig) -> float:
    delay = min(retry.backoff * (2**attempt), retry.max_backoff)
    if error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return delay
