"""The one error hierarchy.

- `GatewayError`: a refusal answered to the client in its own dialect (status, message, code,
  param, type, headers); each layer's refusal (`InvalidRequest`, `AuthError`, `BodyError`,
  `NoCapableTarget`, the server's `Refused`) is a subclass named for where it arises, and
  `server/errors.py` renders any of them.
- `ErrorClass`: every upstream failure is classified once, where it is decoded, and
  `POLICY` says what each class means to failover, retries and health, in one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class GatewayError(Exception):
    """A refusal: the client's request is answered with this error in its own dialect's shape.

    `error_type` None lets the dialect choose the type for the status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type
        self.headers: dict[str, str] = dict(headers or {})


class ErrorClass(StrEnum):
    CLIENT_ERROR = "client_error"  # the client's own request is wrong: return it as is
    CONTEXT_LENGTH = "context_length"  # prompt too long for this model: try a larger one
    AUTH = "auth"  # 401/403: the provider key is wrong or expired
    QUOTA = "quota"  # credits or daily allocation exhausted
    RATE_LIMITED = "rate_limited"  # 429: come back later
    OVERLOADED = "overloaded"  # 529 / overloaded_error
    SERVER_ERROR = "server_error"  # 5xx
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    INVALID_OUTPUT = "invalid_output"  # 200 with an answer that cannot be used
    STREAM_BROKEN = "stream_broken"  # stream ended or failed before it finished

    @property
    def fails_over(self) -> bool:
        """Whether another target may answer where this one failed (read from `POLICY`)."""
        return POLICY[self].fails_over


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    """What one class of upstream failure means to the rest of the gateway."""

    fails_over: bool  # another target may answer; if not, the error goes back to the client
    retry_same_target: bool  # worth another try at the same target before moving on
    counts_against_health: bool  # a failure for the model's breaker and error rate


# The one table. Classes that are neither retried nor counted have reactions of their own:
# rate_limited and quota cool the model down, auth marks it misconfigured (health/engine.py),
# context_length skips later targets no larger (execute/scheduler.py). invalid_output is
# retried within the output guard's own budget (`guard_retries`), the others within `retry`.
POLICY: Mapping[ErrorClass, ErrorPolicy] = MappingProxyType(
    {
        #                                fails_over, retry_same_target, counts_against_health
        ErrorClass.CLIENT_ERROR: ErrorPolicy(False, False, False),  # passed through as is
        ErrorClass.CONTEXT_LENGTH: ErrorPolicy(True, False, False),
        ErrorClass.AUTH: ErrorPolicy(True, False, False),
        ErrorClass.QUOTA: ErrorPolicy(True, False, False),
        ErrorClass.RATE_LIMITED: ErrorPolicy(True, True, False),  # a cooldown, not a failure
        ErrorClass.OVERLOADED: ErrorPolicy(True, True, True),
        ErrorClass.SERVER_ERROR: ErrorPolicy(True, True, True),
        ErrorClass.TIMEOUT: ErrorPolicy(True, True, True),
        ErrorClass.CONNECTION: ErrorPolicy(True, True, True),
        ErrorClass.INVALID_OUTPUT: ErrorPolicy(True, True, True),
        ErrorClass.STREAM_BROKEN: ErrorPolicy(True, True, True),
    }
)


class UpstreamError(Exception):
    """A failed attempt at one target, already classified.

    `message` must never contain a secret: dialects redact before raising.
    """

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.error_type = error_type
        self.code = code
        self.param = param
        # a short tag for headers and health, e.g. "ttft" for a time-to-first-token timeout
        self.detail = detail
        # the Usage an upstream reported with the error (OpenRouter's in-stream errors carry
        # what was spent): what the ledger counts instead of an estimate
        self.usage: Any = None

    @property
    def reason(self) -> str:
        """A compact reason for the x-turnout-fallback header: `server_error(500)`."""
        extra = self.detail or (str(self.status) if self.status else "")
        return f"{self.error_class.value}({extra})" if extra else self.error_class.value

    def __repr__(self) -> str:
        return f"UpstreamError({self.error_class.value}, {self.status}, {self.message!r})"
