"""Session stickiness: the model each workflow session is on, so its steps share one fate.

Session ids (and OpenAI `user` values) come from clients at any length: the map keeps a
fixed-size hash of each, so 100,000 sessions cost a few MB however long their ids are."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

from turnout.config.schema import Consistency
from turnout.health import HealthEngine
from turnout.model import Request
from turnout.routing.targets import Target

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


class SessionConsistency:
    """A route's session stickiness, built once with its plan: after the route's policy has
    ordered the targets, a session's model (or a preferred one) goes first while available."""

    def __init__(self, route: str, consistency: Consistency) -> None:
        self.route = route
        self.prefer = frozenset(consistency.prefer)
        self.sessions = SessionMap(consistency.ttl)

    def order(self, targets: list[Target], request: Request, health: HealthEngine) -> list[Target]:
        key = request.session or request.user
        now = time.time()

        def available(target: Target) -> bool:
            return health.available_at(target.name, now) <= now

        first = next((t for t in targets if t.name in self.prefer and available(t)), None)
        if first is None and key:
            current = self.sessions.get(self.route, key)
            first = next((t for t in targets if t.name == current and available(t)), None)
        if first is None:
            return targets
        return [first, *(t for t in targets if t is not first)]

    def remember(self, request: Request, model: str) -> None:
        """The session's model is the one that just answered: a failover moves it whole."""
        key = request.session or request.user
        if key:
            self.sessions.put(self.route, key, model)
