"""Cached answers in Redis, shared by every gateway process of a fleet.

Each answer is one string key, `{prefix}:cache:{route tag}:{digest}`, written with SET and an
expiry (PX), so Redis' own memory policy can evict them (`volatile-lru`, `allkeys-lru`) and
none outlives its TTL. A clear walks the route's keys with SCAN and UNLINKs them. The
semantic cache's vectors are hashes beside them (RedisVectors), mirrored in each process.

Redis going away is a miss, never a failed request: a failed call makes the cache skip
Redis for a moment (requests do not each wait for a dead server), with one warning."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from turnout import clock
from turnout.cache.backends import CacheUnavailable
from turnout.cache.shelves import Shelves
from turnout.cache.vectors import Match, stamped, unstamped

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


# Both scripts take KEYS = (the bucket's hash, its order). The hash: field per answer key, its
# vector stamped with its expiry; `#epoch`, a token made when the bucket is created (a clear or
# an expiry deletes it: a mirror that sees another epoch starts again); `#seq`, the counter of
# additions. The order: a sorted set of the answer keys by the sequence number of their
# addition, so a mirror asks only for what came after what it has, and the oldest go first.
_ADD = """
redis.call('HSETNX', KEYS[1], '#epoch', ARGV[5])
local seq = redis.call('HINCRBY', KEYS[1], '#seq', 1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
while excess > 0 do
  local n = math.min(excess, 1000)
  local old = redis.call('ZRANGE', KEYS[2], 0, n - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - 1)
  redis.call('HDEL', KEYS[1], unpack(old))
  excess = excess - n
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return seq
"""
# ARGV: the mirror's epoch, the newest sequence number it has, at most how many to send.
# Answers {} when the bucket does not exist, else {epoch, the oldest sequence number kept,
# {key, seq, key, seq, ...} after the mirror's (all, for another epoch), their values}.
_SYNC = """
local epoch = redis.call('HGET', KEYS[1], '#epoch')
if not epoch then return {} end
local after = ARGV[2]
if epoch ~= ARGV[1] then after = '0' end
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local news = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. after, '+inf', 'WITHSCORES',
                        'LIMIT', 0, tonumber(ARGV[3]))
local values = {}
if #news > 0 then
  local fields = {}
  for i = 1, #news, 2 do fields[#fields + 1] = news[i] end
  values = redis.call('HMGET', KEYS[1], unpack(fields))
end
return {epoch, oldest[2] or '0', news, values}
"""
_SYNC_BATCH = 128  # vectors copied per lookup at most: a cold mirror catches up over a few
_INLINE = 8  # vectors copied on the event loop; a larger batch is added on a thread
_ORDER = "#order"  # the order's name: the hash's, then this


class RedisVectors:
    """The semantic cache's buckets in Redis, through the answers' connection (and its pause
    after a failure), each process searching a local mirror of them.

    Per bucket a hash, `{prefix}:cachevec:{route tag}:{context}`, and beside it its order
    (`..#order`), both expiring with the newest vector (plain Redis has no per-field expiry
    before 7.4, and no vector search: each vector also carries its expiry, and the mirror
    searches). A lookup is one round trip (a script): what was added since the mirror's last
    copy, and the oldest entry kept (the mirror drops what Redis evicted), then a search of
    the local shelf. A mirror never answers with a vector whose answer is gone for good
    reasons: expired ones are dropped by their stamp, evicted ones by the order, a cleared
    or expired bucket by its epoch; and the answer itself is looked up after a match.
    Unreachable Redis finds nothing and keeps nothing."""

    def __init__(self, answers: RedisBackend, prefix: str, shelves: Shelves | None = None) -> None:
        self._answers = answers
        self.prefix = f"{prefix}:cachevec:"
        self.mirrors = shelves or Shelves()
        self._add: AsyncScript | None = None
        self._sync: AsyncScript | None = None

    def _scripts(self, redis: aioredis.Redis) -> tuple[AsyncScript, AsyncScript]:
        if self._add is None or self._sync is None:
            self._add, self._sync = redis.register_script(_ADD), redis.register_script(_SYNC)
        return self._add, self._sync

    async def nearest(self, bucket: str, vector: bytes) -> Match | None:
        redis = self._answers._usable()
        if redis is None:
            return None
        shelf = self.mirrors.get(bucket)
        if shelf is not None and shelf.busy:
            return None  # a batch is being copied in: a miss (never a wrong answer) meanwhile
        epoch, seq = (shelf.epoch, shelf.seq) if shelf is not None else (b"", 0)
        name = self.prefix + bucket
        try:
            _, sync = self._scripts(redis)
            reply = await sync(keys=[name, name + _ORDER], args=[epoch, seq, _SYNC_BATCH])
        except (RedisError, OSError) as exc:
            self._answers._failed(exc)
            return None
        if not await self._mirror(bucket, reply):
            return None
        return self.mirrors.nearest(bucket, vector)

    async def _mirror(self, bucket: str, reply: list[Any]) -> bool:
        """Bring the bucket's mirror up to date with a _SYNC reply; False when there is
        nothing to search (no bucket, or the mirror busy)."""
        if not reply:  # no such bucket (cleared, expired, never made)
            self.mirrors.drop(bucket)
            return False
        epoch, oldest, news, values = reply
        shelf = self.mirrors.get(bucket)
        if shelf is not None and shelf.busy:
            return False  # (another lookup's batch went to a thread meanwhile)
        if shelf is None or shelf.epoch != epoch:
            self.mirrors.drop(bucket)
            shelf = self.mirrors.take(bucket)
            shelf.epoch = epoch
        shelf.drop_before(int(float(oldest)))
        now, entries = clock.now(), []  # (the stamps are turnout.clock's: vectors.stamped)
        for field, score, value in zip(news[::2], news[1::2], values, strict=True):
            seq = int(float(score))
            if seq <= shelf.seq:  # (another lookup copied it meanwhile)
                continue
            shelf.seq = seq
            parsed = unstamped(value) if isinstance(value, bytes) else None
            if parsed is not None and parsed[0] > now:
                key = field.decode() if isinstance(field, bytes) else str(field)
                entries.append((key, parsed[1], parsed[0], seq))
        if len(entries) <= _INLINE:
            shelf.add_many(entries)
        else:
            shelf.busy = True
            try:
                await asyncio.to_thread(shelf.add_many, entries)
            finally:
                shelf.busy = False
        self.mirrors.counted(bucket)
        return True

    async def add(self, bucket: str, key: str, vector: bytes, ttl: float, limit: int) -> None:
        redis = self._answers._usable()
        if redis is None:
            return
        name = self.prefix + bucket
        ttl_ms = max(1, int(ttl * 1000))
        args: list[bytes | str | int] = [
            key,
            stamped(vector, ttl),
            ttl_ms,
            limit,
            secrets.token_hex(8),
        ]
        try:
            add, _ = self._scripts(redis)
            await add(keys=[name, name + _ORDER], args=args)
        except (RedisError, OSError) as exc:
            self._answers._failed(exc)

    async def clear(self, tag: str) -> int:
        self.mirrors.drop_route(tag)  # (other processes' mirrors see the epoch gone)
        redis = self._answers._redis
        if redis is None:
            return 0
        removed = 0
        try:
            pattern = f"{self.prefix.translate(_GLOB)}{tag}:*"
            async for name in redis.scan_iter(match=pattern, count=_SCAN_BATCH):
                if await redis.unlink(name) and not name.endswith(_ORDER.encode()):
                    removed += 1
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"Redis: {type(exc).__name__}") from None
        return removed
