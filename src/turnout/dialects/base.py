"""The two shapes every wire format fills in: the upstream side (what a provider accepts and
returns) and the ingress side (what a client sends us and expects back).

Everything here is pure: no I/O, no globals. Adding a provider is one UpstreamDialect plus a
kind module in providers/ (see providers/registry.py); adding a client API is one IngressDialect plus a route."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from turnout.dialects.sse import SSEEvent
from turnout.model import Delta, Request, Response, UpstreamError, Usage


class StreamDecoder(Protocol):
    """Turns one upstream stream's SSE events into deltas. Stateful: one per stream."""

    done: bool  # the upstream said the stream is over: stop reading
    finished: bool  # the answer is complete (a finish reason or an end event was seen)

    def event(self, event: SSEEvent) -> Iterable[Delta]:
        """Deltas for one event; raises UpstreamError for an error inside the stream."""
        ...


class UpstreamDialect(Protocol):
    @property
    def default_base_url(self) -> str | None:
        """Where the upstream is when the config names no base_url (None: it must name one).
        Read-only, so a class attribute of type str, or None, satisfies it."""
        ...

    def url(self, base_url: str, upstream_model: str, stream: bool) -> str: ...

    def auth_headers(self, api_key: str | None) -> dict[str, str]: ...

    def encode_request(self, request: Request, upstream_model: str, stream: bool) -> Any:
        """The JSON body (a dict) for the upstream."""
        ...

    def decode_response(self, body: bytes) -> Response: ...

    def stream_decoder(self) -> StreamDecoder: ...

    def decode_error(
        self, status: int, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamError: ...


class StreamEncoder(Protocol):
    """Turns deltas into the client's stream events. Stateful: one per client stream."""

    def start(self) -> bytes: ...

    def delta(self, delta: Delta) -> bytes: ...

    def finish(self, usage: Usage | None) -> bytes:
        """The closing events, once the upstream stream ended well."""
        ...

    def error(self, status: int, message: str, code: str) -> bytes:
        """An explicit error event: the stream failed after content reached the client."""
        ...


class IngressDialect(Protocol):
    name: str

    def decode_request(self, raw: bytes) -> Request:
        """Raises InvalidRequest (turnout.dialects.errors) for a malformed request."""
        ...

    def encode_response(self, response: Response, model: str) -> bytes: ...

    def stream_encoder(self, request: Request, model: str) -> StreamEncoder: ...

    def encode_error(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> bytes: ...
