"""The provider interface an upstream attempt drives: one call, one answer or one stream."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from turnout.config.schema import ProviderConfig, Timeouts
from turnout.config.secrets import Secret, SecretRedactor
from turnout.model import Delta, ErrorClass, Request, Response, UpstreamError
from turnout.model.embeddings import EmbeddingRequest, EmbeddingResult


@dataclass(slots=True)
class Call:
    """One attempt at one upstream model. The provider fills in what it saw."""

    upstream_model: str
    timeouts: Timeouts
    # the client's wire format when its answer may pass through undecoded (Request.answer_format
    # and nothing in this attempt needs the decoded answer); None: decode it
    pass_through: str | None = None
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # when the headers arrived (turnout.clock epoch seconds): a relative rate-limit reset
    # (`12s`) was said at most this long ago, so counted from here it never ends too early
    headers_at: float = 0.0


class Provider(ABC):
    """A transport plus an upstream dialect. Subclasses raise UpstreamError, classified."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config
        # removes secrets from what this provider's errors say; the gateway replaces it with
        # one that knows every secret in the config (a key may leak through another's error)
        self.redactor = SecretRedactor.of(self.secrets)

    @property
    def secrets(self) -> list[Secret]:
        return [self.config.api_key] if self.config.api_key else []

    def unavailable_reason(self) -> str | None:
        """Why this provider cannot be used at all (a missing key), or None."""
        key = self.config.api_key
        if key is not None and not key.is_set:
            return f"environment variable {key.env_var} is not set"
        return None

    async def start(self) -> None:
        """Open pools, load models. Called once inside the running event loop."""

    async def close(self) -> None:
        """Release what start() opened."""

    @abstractmethod
    async def complete(self, request: Request, call: Call) -> Response: ...

    @abstractmethod
    def stream(self, request: Request, call: Call) -> AsyncIterator[Delta]: ...

    async def embed(self, request: EmbeddingRequest, call: Call) -> EmbeddingResult:
        """One vector per input. Kinds that serve embeddings say so in their config model
        (`ProviderConfig.embeddings`) and override this; the config refuses an embeddings
        model on any other kind, so this default is never reached from a valid config."""
        raise UpstreamError(
            ErrorClass.CLIENT_ERROR,
            f"provider {self.name!r} (kind {self.config.kind}) has no embeddings endpoint",
            status=400,
        )
