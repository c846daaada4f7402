"""Session stickiness: the model each workflow session is on, so its steps share one fate."""

from __future__ import annotations

import time
from collections import OrderedDict

_MAX_SESSIONS = 100_000  # per process; the oldest are forgotten first


class SessionMap:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._models: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def get(self, route: str, session: str) -> str | None:
        entry = self._models.get((route, session))
        if entry is None:
            return None
        model, seen = entry
        if time.monotonic() - seen > self.ttl:
            del self._models[(route, session)]
            return None
        return model

    def put(self, route: str, session: str, model: str) -> None:
        key = (route, session)
        self._models[key] = (model, time.monotonic())
        self._models.move_to_end(key)
        while len(self._models) > _MAX_SESSIONS:
            self._models.popitem(last=False)
