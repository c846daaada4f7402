"""A route's `cache:` section: answers to identical requests served again without an upstream
call (turnout/cache/ does it).

schema.py imports this module for RouteConfig's `cache:` field, so this one imports nothing
of schema's (an import cycle); durations are parsed here the way schema.py parses them."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def _seconds(value: Any) -> float:
    """`1h`, `30m`, `90s`, `7d` or a number of seconds -> seconds (more than zero)."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like 1h or 30m")  # noqa: TRY004 - pydantic wants ValueError
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration like 1h, 30m or 90s")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


class CacheConfig(BaseModel):
    """`cache: {mode: exact, ttl: 1h}` on a route (off when the section is absent), or
    `cache: {mode: semantic, embed_route: embed, threshold: 0.95}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # exact: the same request (route, messages, tools, parameters) gets the same answer.
    # semantic: also a request whose last user message is similar enough to an earlier one's,
    # everything else (earlier messages, tools, parameters) being the same
    mode: Literal["exact", "semantic"] = "exact"
    ttl: Annotated[float, BeforeValidator(_seconds)] = 3600.0  # an answer is served this long
    # hits are per API key unless shared: one key's answers never reach another key
    share_across_keys: bool = False
    # a request asking for temperature > 0 wants a fresh sample, so it is not cached unless
    # the route says sampled answers may be served again
    cache_sampled: bool = False
    # a larger answer is not stored (Redis values stay small; the memory LRU stays bounded)
    max_entry_bytes: int = Field(256 * 1024, ge=1024, le=16 * 1024 * 1024)
    # semantic mode: the embeddings route (of this gateway) that embeds the last user message
    embed_route: str | None = None
    # semantic mode: the least cosine similarity between the two messages' vectors for a hit
    threshold: float = Field(0.95, gt=0.0, le=1.0)
    # semantic mode: the vectors kept per conversation context (the same earlier messages and
    # parameters), oldest out first. A large context is an HNSW index (usearch): a lookup at
    # 10,000 vectors of 1,536 dimensions stays well under a millisecond (bench/RESULTS.md)
    max_vectors: int = Field(10_000, ge=1, le=100_000)

    @model_validator(mode="after")
    def _semantic_needs_an_embed_route(self) -> CacheConfig:
        if self.mode == "semantic" and not self.embed_route:
            raise ValueError("mode semantic needs `embed_route`: an embeddings route to use")
        return self
