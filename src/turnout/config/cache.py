"""A route's `cache:` section: answers to identical requests served again without an upstream
call (turnout/cache/ does it).

schema.py imports this module for RouteConfig's `cache:` field, so this one imports nothing
of schema's (an import cycle); durations are parsed here the way schema.py parses them."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

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
    """`cache: {mode: exact, ttl: 1h}` on a route (off when the section is absent)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # exact: the same request (route, messages, tools, parameters) gets the same answer.
    # (`semantic` is to come: a similar-enough earlier prompt; the cache's Index seam)
    mode: Literal["exact"] = "exact"
    ttl: Annotated[float, BeforeValidator(_seconds)] = 3600.0  # an answer is served this long
    # hits are per API key unless shared: one key's answers never reach another key
    share_across_keys: bool = False
    # a request asking for temperature > 0 wants a fresh sample, so it is not cached unless
    # the route says sampled answers may be served again
    cache_sampled: bool = False
    # a larger answer is not stored (Redis values stay small; the memory LRU stays bounded)
    max_entry_bytes: int = Field(256 * 1024, ge=1024, le=16 * 1024 * 1024)
