"""Session stickiness: the model each workflow session is on, so its steps share one fate.

Session ids (and OpenAI `user` values) come from clients at any length: the map keeps a
fixed-size hash of each, so 100,000 sessions cost a few MB however long their ids are."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

_MAX_SESSIONS = 100_000  # per process; the oldest are forgotten first


def session_key(session: str) -> bytes:
    """A 16-byte digest of the session id (surrogatepass: header text may hold surrogates)."""
    return hashlib.blake2b(session.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class SessionMap:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        # (route, session_key) -> (model, last seen); route and model are config names
        self._models: OrderedDict[tuple[str, bytes], tuple[str, float]] = OrderedDict()

    def get(self, route: str, session: str) -> str | None:
        key = (route, session_key(session))
        entry = self._models.get(key)
        if entry is None:
            return None
        model, seen = entry
        if time.monotonic() - seen > self.ttl:
            del self._models[key]
            return None
        return model

    def put(self, route: str, session: str, model: str) -> None:
        key = (route, session_key(session))
        self._models[key] = (model, time.monotonic())
        self._models.move_to_end(key)
        while len(self._models) > _MAX_SESSIONS:
            self._models.popitem(last=False)
