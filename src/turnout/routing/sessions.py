"""Session stickiness: the model each workflow session is on, so its steps share one fate.

Session ids (and OpenAI `user` values) come from clients at any length: the map keeps a
fixed-size hash of each, so 100,000 sessions cost a few MB however long their ids are.

With `state: {backend: redis}` the map is shared (SharedSessions): a session's model is read
from Redis before its request is routed and written there when it is answered, so every
gateway process keeps the session on one model. Requests without a session never ask."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from turnout import clock
from turnout.config.schema import Consistency
from turnout.health import HealthEngine
from turnout.model import Request
from turnout.routing.targets import Target

log = logging.getLogger("turnout.sessions")

_MAX_SESSIONS = 100_000  # per process; the oldest are forgotten first
# seconds Redis is left alone after it failed (this process's map meanwhile): a back-off from
# a failing service, so real time (time.monotonic), as pacing's and the cache's
_AWAY = 1.0


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
        if clock.monotonic() - seen > self.ttl:  # (a TTL is a time window: turnout.clock)
            del self._models[key]
            return None
        return model

    def put(self, route: str, session: str, model: str) -> None:
        key = (route, session_key(session))
        self._models[key] = (model, clock.monotonic())
        self._models.move_to_end(key)
        while len(self._models) > _MAX_SESSIONS:
            self._models.popitem(last=False)


class SessionConsistency:
    """A route's session stickiness, built once with its plan: after the route's policy has
    ordered the targets, a session's model (or a preferred one) goes first while available."""

    def __init__(
        self, route: str, consistency: Consistency, sessions: SessionMap | None = None
    ) -> None:
        """`sessions`: the memory of the route's consistency before a reload, kept."""
        self.route = route
        self.prefer = frozenset(consistency.prefer)
        self.sessions = sessions or SessionMap(consistency.ttl)
        self.sessions.ttl = consistency.ttl

    def order(self, targets: list[Target], request: Request, health: HealthEngine) -> list[Target]:
        key = request.session or request.user
        now = clock.now()  # health's times are turnout.clock's

        def available(target: Target) -> bool:
            return health.available_at(target.key, now) <= now

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


class SharedSessions:
    """The session -> model map in Redis: one key per (route, session), expiring after the
    route's ttl. Redis away: each process falls back to its own map, with a warning, and
    asks again a second later."""

    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self._redis = aioredis.from_url(
            url, socket_connect_timeout=0.5, socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
        )
        self._away_until = 0.0
        self._warned = False
        self._writes: set[asyncio.Task[None]] = set()

    def _key(self, route: str, session: str) -> str:
        return f"{self.prefix}:session:{route}:{session_key(session).hex()}"

    async def recall(self, consistency: SessionConsistency, request: Request) -> None:
        """The session's model as the fleet last saw it, into this process's map."""
        session = request.session or request.user
        if not session or time.monotonic() < self._away_until:
            return
        try:
            model = await self._redis.get(self._key(consistency.route, session))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return
        self._warned = False
        if model is not None:
            name = model.decode() if isinstance(model, bytes) else str(model)
            consistency.sessions.put(consistency.route, session, name)

    async def remember(self, consistency: SessionConsistency, request: Request, model: str) -> None:
        """The model that answered the session, for every process (the local map has it)."""
        session = request.session or request.user
        if not session or time.monotonic() < self._away_until:
            return
        ttl = max(1, round(consistency.sessions.ttl))
        try:
            await self._redis.set(self._key(consistency.route, session), model, ex=ttl)
        except (RedisError, OSError) as exc:
            self._failed(exc)

    def remember_soon(self, consistency: SessionConsistency, request: Request, model: str) -> None:
        """`remember` without waiting (a stream's answer is already on its way)."""
        if not (request.session or request.user):
            return
        task = asyncio.get_running_loop().create_task(self.remember(consistency, request, model))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _failed(self, exc: BaseException) -> None:
        self._away_until = time.monotonic() + _AWAY
        if not self._warned:
            self._warned = True
            log.warning(
                "Redis unavailable (%s): session stickiness is per process until it is back",
                type(exc).__name__,
            )

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self._redis.aclose()
