"""Error classes: every upstream failure is classified once, where it is decoded."""

from __future__ import annotations

from enum import StrEnum


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
        """Whether another target may answer where this one failed."""
        return self is not ErrorClass.CLIENT_ERROR


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

    @property
    def reason(self) -> str:
        """A compact reason for the x-turnout-fallback header: `server_error(500)`."""
        extra = self.detail or (str(self.status) if self.status else "")
        return f"{self.error_class.value}({extra})" if extra else self.error_class.value

    def __repr__(self) -> str:
        return f"UpstreamError({self.error_class.value}, {self.status}, {self.message!r})"
