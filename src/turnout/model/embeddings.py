"""An embeddings request and its result: one shape each, whatever API came in or goes out.

Embeddings are not chat: no messages, no streams, no output tokens. They get their own two
small types rather than optional fields on Request and Response, so the chat path (and its
benchmark) carries nothing for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from turnout.model.types import Usage

EncodingFormat = Literal["float", "base64"]


@dataclass(slots=True)
class EmbeddingRequest:
    """Texts (or token id lists) to embed, decoded from the client's API."""

    model: str  # what the client asked for: a route name or a model name
    # each input as the client sent it: all strings, or all lists of token ids
    inputs: list[str] | list[list[int]]
    encoding_format: EncodingFormat = "float"  # how the client wants the vectors back
    dimensions: int | None = None  # passed to the upstream, which shortens the vectors
    user: str | None = None
    # parameters turnout does not interpret, passed through to OpenAI-compatible upstreams
    extra: dict[str, Any] = field(default_factory=dict)
    # from HTTP headers, as for chat: the session, models to skip, an admin's policy override
    session: str | None = None
    exclude: frozenset[str] = frozenset()
    policy: str | None = None
    request_id: str | None = None  # the gateway's id of this request (the ledger row's)

    @property
    def tokenized(self) -> bool:
        """True when the inputs are token id lists, not text."""
        return bool(self.inputs) and not isinstance(self.inputs[0], str)


@dataclass(slots=True)
class EmbeddingResult:
    """One vector per input, in input order, and what the upstream counted."""

    vectors: list[list[float]]
    # None when the upstream did not say: the executor then counts the input itself
    usage: Usage | None = None
