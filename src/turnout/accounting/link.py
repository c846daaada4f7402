"""A Redis connection that counting shared by the fleet falls back from, and rejoins.

Counters shared through Redis (key limits and budgets, hedge caps) all degrade alike when
Redis is away: the caller counts in this process instead, with one warning in the log and
one SharedStateChanged event; a probe every second rejoins Redis, with a second warning
and event, and `on_back` is called then (to write what was queued meanwhile). No request
fails for it: every call made through the link answers "not shared" instead of raising."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from turnout import clock
from turnout.events import Publish, SharedStateChanged

log = logging.getLogger("turnout.shared")

PROBE = 1.0  # seconds between reconnection attempts while Redis is away


class RedisLink:
    """One Redis client for counting `what`, and whether it is shared now."""

    def __init__(
        self,
        url: str,
        what: str,
        publish: Publish,
        on_back: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.what = what
        self.publish = publish
        self.on_back = on_back
        self._redis: aioredis.Redis | None = None
        self._connected = False
        self._announced = True  # the state last announced (shared); the first loss is news
        self._probe: asyncio.Task[None] | None = None

    @property
    def shared(self) -> bool:
        """Whether counting is shared now (False while Redis is away)."""
        return self._connected

    @property
    def redis(self) -> aioredis.Redis:
        assert self._redis is not None, "RedisLink.open() first"
        return self._redis

    def open(self) -> aioredis.Redis:
        """The client, made without a round trip: the link counts as shared until a call
        through it fails (for a caller that cannot wait for `start`)."""
        if self._redis is None:
            # no retries inside redis-py: a refused connection must fall back at once
            self._redis = aioredis.from_url(
                self.url,
                socket_connect_timeout=0.5,
                socket_timeout=1.0,
                retry=Retry(NoBackoff(), 0),
            )
            self._connected = True
        return self._redis

    async def start(self) -> None:
        """`open`, then a ping: shared from the start, or counting locally at once."""
        client = self.open()
        try:
            await client.ping()
            log.info("%s shared through Redis", self.what)
        except (RedisError, OSError) as exc:
            self.lost(exc)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probe
        if self._redis is not None:
            await self._redis.aclose()

    def lost(self, exc: BaseException) -> None:
        """A call failed: count locally (announced once) and probe until Redis is back."""
        self._connected = False
        if self._announced:
            self._announced = False
            reason = type(exc).__name__
            log.warning(
                "Redis at %s unavailable (%s): %s are counted in this process until it is back",
                safe_url(self.url),
                reason,
                self.what,
            )
            self.publish(SharedStateChanged(self.what, False, reason, clock.now()))
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(
                self._rejoin(), name="shared-probe"
            )

    async def _rejoin(self) -> None:
        while True:
            await asyncio.sleep(PROBE)
            try:
                await self.redis.ping()
            except (RedisError, OSError):
                continue
            self._connected = True
            if not self._announced:
                self._announced = True
                log.warning(
                    "Redis at %s is back: %s are shared again", safe_url(self.url), self.what
                )
                self.publish(SharedStateChanged(self.what, True, None, clock.now()))
            if self.on_back is not None:
                self.on_back()
            return


def safe_url(url: str) -> str:
    """The Redis URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
