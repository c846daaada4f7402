"""Health state shared through Redis: a hash holds the latest document per key, a pub/sub
channel carries each change to the other gateway processes within milliseconds.

Redis going away degrades to local state with a warning, never to failed requests: writes
wait (latest per key) and are replayed when Redis is back; the subscriber reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from turnout.health.state.base import ApplyRemote, StateStore

log = logging.getLogger("turnout.state")

_RECONNECT = 1.0  # seconds between attempts while Redis is away


class RedisStore(StateStore):
    def __init__(self, url: str, prefix: str, name: str = "health") -> None:
        self.url = url
        self.name = name
        self.hash_key = f"{prefix}:{name}"
        self.channel = f"{prefix}:{name}:changes"
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._redis: aioredis.Redis | None = None
        self._pending: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._connected = False
        self._warned = False
        self._apply: ApplyRemote | None = None

    @property
    def shared(self) -> bool:
        return self._connected

    async def start(self, apply: ApplyRemote) -> None:
        self._apply = apply
        self._redis = aioredis.from_url(
            self.url, socket_connect_timeout=1.0, socket_timeout=2.0, health_check_interval=10
        )
        try:
            await self._load()
        except (RedisError, OSError) as exc:
            self._degraded(exc)
        self._tasks = [
            asyncio.create_task(self._follow(), name="state-follow"),
            asyncio.create_task(self._write(), name="state-write"),
        ]

    async def _load(self) -> None:
        assert self._redis is not None and self._apply is not None
        documents = await self._redis.hgetall(self.hash_key)
        for key, raw in documents.items():
            self._apply(key.decode() if isinstance(key, bytes) else key, orjson.loads(raw))
        if not self._connected:
            log.info("%s state shared through Redis at %s", self.name, _safe_url(self.url))
        self._connected = True

    def _degraded(self, exc: BaseException) -> None:
        if self._connected or not self._warned:
            log.warning(
                "Redis at %s unavailable (%s): %s state is local to this process until it is back",
                _safe_url(self.url),
                type(exc).__name__,
                self.name,
            )
            self._warned = True
        self._connected = False

    def publish(self, key: str, document: dict[str, Any]) -> None:
        self._pending[key] = orjson.dumps(document)
        self._wake.set()

    async def _write(self) -> None:
        assert self._redis is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending, {}
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        # redis-py types the mapping's keys as one invariant union, so it
                        # refuses a dict[str, bytes] it accepts at run time
                        pipe.hset(self.hash_key, mapping=batch)  # type: ignore[arg-type]
                        for key, raw in batch.items():
                            message = b'{"origin":"%s","key":"%s","doc":%s}' % (
                                self.origin.encode(),
                                key.encode(),
                                raw,
                            )
                            pipe.publish(self.channel, message)
                        await pipe.execute()
                except (RedisError, OSError) as exc:
                    self._degraded(exc)
                    # keep the newest document per key for when Redis is back
                    self._pending = {**batch, **self._pending}
                    await asyncio.sleep(_RECONNECT)

    async def _follow(self) -> None:
        assert self._redis is not None and self._apply is not None
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    await self._load()  # catch up on what changed while we were away
                    if self._pending:
                        self._wake.set()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        change = orjson.loads(message["data"])
                        if change.get("origin") != self.origin:
                            self._apply(change["key"], change["doc"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._degraded(exc)
            except Exception:
                log.exception("unexpected error following shared %s state", self.name)
            await asyncio.sleep(_RECONNECT)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._pending and self._connected and self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                # (redis-py's mapping type: see _write)
                await self._redis.hset(self.hash_key, mapping=self._pending)  # type: ignore[arg-type]
        if self._redis is not None:
            await self._redis.aclose()


def _safe_url(url: str) -> str:
    """The Redis URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
