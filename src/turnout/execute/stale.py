"""The last good answer to each identical request, for routes with `stale_if_error`: when
no target can answer, a recent stored answer beats an error."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import orjson

from turnout import clock
from turnout.model import Request, Response

_MAX_ENTRIES = 2048  # per gateway process; oldest out first


@dataclass(slots=True)
class StaleEntry:
    response: Response
    model: str
    stored_at: float


def request_key(route: str, request: Request) -> bytes:
    """Identical requests (same route, messages and generation parameters) share a key."""
    material = orjson.dumps(
        [
            route,
            request.messages,
            request.tools,
            request.tool_choice,
            request.response_format,
            request.temperature,
            request.top_p,
            request.max_tokens,
            request.stop,
            request.extra,
        ],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.blake2b(material, digest_size=16).digest()


class StaleCache:
    def __init__(self, max_entries: int = _MAX_ENTRIES) -> None:
        self._entries: OrderedDict[bytes, StaleEntry] = OrderedDict()
        self._max = max_entries

    def put(self, route: str, request: Request, response: Response, model: str) -> None:
        key = request_key(route, request)
        self._entries[key] = StaleEntry(response, model, clock.now())
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def get(self, route: str, request: Request, max_age: float) -> StaleEntry | None:
        entry = self._entries.get(request_key(route, request))
        if entry is None or clock.now() - entry.stored_at > max_age:
            return None
        return entry
