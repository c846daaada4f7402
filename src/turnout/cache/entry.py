"""A cached answer as stored: the decoded Response (never an upstream's pass-through body),
the model that gave it, what it cost then and when it was stored, as compact JSON bytes.

The same bytes go to Redis and to the in-memory LRU, so every replica reads what any other
wrote. A value that does not decode (another version's, a corrupted one) is a miss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from turnout import clock
from turnout.model import Response, ToolCall, Usage

_VERSION = 1


@dataclass(slots=True)
class Entry:
    response: Response
    model: str  # the target that answered
    cost_usd: float  # what the answer cost upstream: what each hit saves
    stored_at: float  # epoch seconds

    @property
    def age(self) -> float:
        return max(0.0, clock.now() - self.stored_at)


def encode(entry: Entry) -> bytes:
    r, u = entry.response, entry.response.usage
    return orjson.dumps(
        {
            "v": _VERSION,
            "model": entry.model,
            "cost": entry.cost_usd,
            "at": entry.stored_at,
            "id": r.id,
            "upstream_model": r.model,
            "content": r.content,
            "tool_calls": [[c.id, c.name, c.arguments] for c in r.tool_calls],
            "finish": r.finish_reason,
            "usage": [u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens],
            "reasoning": r.reasoning,
            "created": r.created,
            "thinking": r.thinking,
        }
    )


def decode(raw: bytes) -> Entry | None:
    """The stored entry, or None when `raw` is not one this version wrote."""
    try:
        data: Any = orjson.loads(raw)
        if not isinstance(data, dict) or data.get("v") != _VERSION:
            return None
        prompt, completion, cached, reasoning = data["usage"]
        response = Response(
            id=data["id"],
            model=data["upstream_model"],
            content=data["content"],
            tool_calls=[ToolCall(*call) for call in data["tool_calls"]],
            finish_reason=data["finish"],
            usage=Usage(prompt, completion, cached, reasoning),
            reasoning=data["reasoning"],
            created=data["created"],
            thinking=data["thinking"],
        )
        return Entry(response, data["model"], float(data["cost"]), float(data["at"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
