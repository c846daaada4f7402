"""Cached answers in Redis, shared by every gateway process of a fleet.

Each answer is one string key, `{prefix}:cache:{route tag}:{digest}`, written with SET and an
expiry (PX), so Redis' own memory policy can evict them (`volatile-lru`, `allkeys-lru`) and
none outlives its TTL. A clear walks the route's keys with SCAN and UNLINKs them.

Redis going away is a miss, never a failed request: a failed call makes the cache skip
Redis for a moment (requests do not each wait for a dead server), with one warning."""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from turnout.cache.backends import CacheUnavailable

log = logging.getLogger("turnout.cache")

_TIMEOUT = 0.5  # seconds: a cache read longer than this is worth less than the upstream call
_PAUSE = 2.0  # seconds without Redis after a failure
_SCAN_BATCH = 500
_GLOB = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})


class RedisBackend:
    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = f"{prefix}:cache:"
        self._redis: aioredis.Redis | None = None
        self._paused_until = 0.0
        self._warned = False
        self._errors = 0
        self._dropped = 0

    @property
    def shared(self) -> bool:
        return self._redis is not None and time.monotonic() >= self._paused_until

    async def start(self) -> None:
        self._redis = aioredis.from_url(
            self.url, socket_connect_timeout=_TIMEOUT, socket_timeout=_TIMEOUT
        )

    def _usable(self) -> aioredis.Redis | None:
        if self._redis is None or time.monotonic() < self._paused_until:
            return None
        return self._redis

    def _failed(self, exc: BaseException) -> None:
        self._errors += 1
        self._paused_until = time.monotonic() + _PAUSE
        if not self._warned:
            self._warned = True
            log.warning(
                "response cache: Redis unavailable (%s): requests are answered upstream"
                " until it is back",
                type(exc).__name__,
            )

    def _recovered(self) -> None:
        if self._warned:
            self._warned = False
            log.info("response cache: Redis is back")

    async def get(self, key: str) -> bytes | None:
        redis = self._usable()
        if redis is None:
            return None
        try:
            value = await redis.get(self.prefix + key)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        self._recovered()
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        redis = self._usable()
        if redis is None:
            self._dropped += 1
            return
        try:
            await redis.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))
        except (RedisError, OSError) as exc:
            self._dropped += 1
            self._failed(exc)

    async def clear(self, tag: str) -> int:
        """Raises CacheUnavailable: a clear that did not happen must not look done."""
        try:
            return await self._clear(tag)
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"Redis: {type(exc).__name__}") from None

    async def _clear(self, tag: str) -> int:
        if self._redis is None:
            return 0
        pattern = f"{self.prefix.translate(_GLOB)}{tag}:*"
        removed = 0
        batch: list[bytes] = []
        async for key in self._redis.scan_iter(match=pattern, count=_SCAN_BATCH):
            batch.append(key)
            if len(batch) >= _SCAN_BATCH:
                removed += await self._redis.unlink(*batch)
                batch = []
        if batch:
            removed += await self._redis.unlink(*batch)
        return removed

    def stats(self) -> dict[str, int]:
        return {"errors": self._errors, "dropped": self._dropped}

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
