"""Key rate limits and budgets counted in Redis, so that every gateway process sharing the
state backend enforces one limit and one budget between them, not one each.

Admission is one Lua script, so one round trip: the key's sliding-minute request and token
windows, then every budget that applies (spent plus the live reservations of requests in
flight), then, when nothing refuses, the request's own reservation. The end of a request
settles it: its reservation goes and its real cost and tokens are added, in a queued write
off the client's path. Concurrent requests thus overshoot a budget by one request at most.

Redis away: `admit` answers None and the caller counts in this process instead, with a
warning and a SharedStateChanged event; a probe every second rejoins Redis, and the
settlements queued meanwhile are written then. No request fails for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from turnout.accounting.budgets import Budget
from turnout.events import Publish, SharedStateChanged

log = logging.getLogger("turnout.shared")

WHAT = "key limits and budgets"
_PROBE = 1.0  # seconds between reconnection attempts while Redis is away
_MAX_PENDING = 100_000  # settlements kept while Redis is away (the oldest are dropped)
_RESERVATION_TTL = 600  # seconds a reservation lives if its request never settles (a crash)

# KEYS: rpm zset (request ids by time), tpm hash (tokens per second), then one hash per
# budget counter.
# ARGV: request id, rpm (-1: none), tpm (-1: none), window, reservation (USD), reservation
#       ttl, then per counter: limit, seed (this process's spent), kind (b|d|p), reserve
#       (1|0), ttl. Answers {0, '', over...} admitted, {1, wait} rate-limited,
#       {2, index} blocked by that counter's budget.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local id, rpm, tpm = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local window, amount, hold = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, tostring(tonumber(oldest[2]) + window - now)}
  end
end
if tpm >= 0 then
  -- tokens per second of the window (at most `window` fields, however busy the key)
  local buckets = redis.call('HGETALL', KEYS[2])
  local used, first = 0, nil
  for i = 1, #buckets, 2 do
    local second = tonumber(buckets[i])
    if second <= now - window then
      redis.call('HDEL', KEYS[2], buckets[i])
    else
      used = used + tonumber(buckets[i + 1])
      if first == nil or second < first then first = second end
    end
  end
  if used >= tpm then return {1, tostring(first + window - now)} end
end
local over = {}
for i = 3, #KEYS do
  local base = 7 + (i - 3) * 5
  local key = KEYS[i]
  if redis.call('HSETNX', key, 'spent', ARGV[base + 1]) == 1 then
    redis.call('EXPIRE', key, ARGV[base + 4])
  end
  local all = redis.call('HGETALL', key)
  local total = 0
  for j = 1, #all, 2 do
    if all[j] == 'spent' then
      total = total + tonumber(all[j + 1])
    else
      local held, expires = string.match(all[j + 1], '^([^|]+)|(.+)$')
      if tonumber(expires) < now then
        redis.call('HDEL', key, all[j])
      else
        total = total + tonumber(held)
      end
    end
  end
  if total >= tonumber(ARGV[base]) then
    if ARGV[base + 2] == 'b' then return {2, tostring(i - 3)} end
    over[#over + 1] = tostring(i - 3)
  end
end
for i = 3, #KEYS do
  if ARGV[7 + (i - 3) * 5 + 3] == '1' then
    redis.call('HSET', KEYS[i], 'r:' .. id, amount .. '|' .. tostring(now + hold))
  end
end
if rpm >= 0 then
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('EXPIRE', KEYS[1], math.ceil(window) + 1)
end
local answer = {0, ''}
for _, index in ipairs(over) do answer[#answer + 1] = index end
return answer
"""

# KEYS: tpm hash, then one hash per budget counter.
# ARGV: request id, tokens (0: none counted), window, cost (USD), then per counter: seed, ttl.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local id, tokens, window, cost = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if tokens > 0 then
  redis.call('HINCRBY', KEYS[1], tostring(math.floor(now)), tokens)
  redis.call('EXPIRE', KEYS[1], math.ceil(window) + 1)
end
for i = 2, #KEYS do
  local base = 5 + (i - 2) * 2
  redis.call('HDEL', KEYS[i], 'r:' .. id)
  if redis.call('HSETNX', KEYS[i], 'spent', ARGV[base]) == 1 then
    redis.call('EXPIRE', KEYS[i], ARGV[base + 1])
  end
  if tonumber(cost) > 0 then redis.call('HINCRBYFLOAT', KEYS[i], 'spent', cost) end
end
return 1
"""


@dataclass(slots=True, frozen=True)
class Charge:
    """One budget a request is checked (and maybe reserved) against, as its Redis counter."""

    budget: Budget
    counter: str  # the Redis hash: spent, and r:<request id> reservations
    seed: float  # this process's spend so far: a counter Redis does not have starts there
    reserve: bool  # key and route budgets hold the request's expected cost until it ends
    ttl: int  # seconds the counter outlives its period's end


@dataclass(slots=True)
class Admission:
    wait: float | None = None  # rate-limited: seconds until the key may ask again
    blocked: Budget | None = None
    over: list[Budget] = field(default_factory=list)  # spent, but not blocking (downgrade...)


@dataclass(slots=True, frozen=True)
class Settlement:
    request_id: str
    tpm_key: str
    tokens: int
    cost: float
    counters: tuple[tuple[str, float, int], ...]  # (counter, seed, ttl)


class SharedCounters:
    def __init__(self, url: str, prefix: str, publish: Publish, window: float = 60.0) -> None:
        self.url = url
        self.prefix = prefix
        self.window = window
        self.publish = publish
        self._redis: aioredis.Redis | None = None
        self._connected = False
        self._announced = True  # the state last announced (shared); the first loss is news
        self._pending: list[Settlement] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._probe: asyncio.Task[None] | None = None

    @property
    def shared(self) -> bool:
        """Whether counting is shared now (False while Redis is away)."""
        return self._connected

    def counter(self, scope: str, name: str, period: str, start: float) -> str:
        return f"{self.prefix}:budget:{scope}:{name}:{period}:{int(start)}"

    def rpm_key(self, key_id: str) -> str:
        return f"{self.prefix}:rpm:{key_id}"

    def tpm_key(self, key_id: str) -> str:
        return f"{self.prefix}:tpm:{key_id}"

    async def start(self) -> None:
        # no retries inside redis-py: a refused connection must fall back at once
        self._redis = aioredis.from_url(
            self.url,
            socket_connect_timeout=0.5,
            socket_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
        )
        self._admit = self._redis.register_script(_ADMIT)
        self._settle = self._redis.register_script(_SETTLE)
        try:
            await self._redis.ping()
            self._connected = True
            log.info("%s shared through Redis (prefix %s)", WHAT, self.prefix)
        except (RedisError, OSError) as exc:
            self._lost(exc)
        self._tasks = [asyncio.create_task(self._write(), name="shared-settle")]

    async def close(self) -> None:
        for task in [*self._tasks, *([self._probe] if self._probe else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._pending and self._connected:
            with contextlib.suppress(RedisError, OSError):
                await self._flush()
        if self._redis is not None:
            await self._redis.aclose()

    # --- admission: one round trip ----------------------------------------------------------

    async def admit(
        self,
        request_id: str,
        key_id: str | None,
        rpm: int | None,
        tpm: int | None,
        charges: list[Charge],
        reserve_usd: float,
    ) -> Admission | None:
        """The shared verdict, or None when Redis is away (the caller counts locally)."""
        if not self._connected or self._redis is None:
            return None
        keys = [
            self.rpm_key(key_id or "-"),
            self.tpm_key(key_id or "-"),
            *(c.counter for c in charges),
        ]
        args: list[str | int | float] = [
            request_id,
            rpm if rpm is not None else -1,
            tpm if tpm is not None else -1,
            self.window,
            repr(round(reserve_usd, 9)),
            _RESERVATION_TTL,
        ]
        for charge in charges:
            kind = _kind(charge.budget)
            args += [charge.budget.usd, repr(charge.seed), kind, int(charge.reserve), charge.ttl]
        try:
            answer = await self._admit(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._lost(exc)
            return None
        status = int(answer[0])
        if status == 1:
            return Admission(wait=float(answer[1]))
        if status == 2:
            return Admission(blocked=charges[int(answer[1])].budget)
        return Admission(over=[charges[int(i)].budget for i in answer[2:]])

    # --- settling: queued, written in batches ------------------------------------------------

    def settle(self, settlement: Settlement) -> None:
        self._pending.append(settlement)
        if len(self._pending) > _MAX_PENDING:
            del self._pending[: len(self._pending) - _MAX_PENDING]
        self._wake.set()

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._connected:
                continue  # the probe wakes us once Redis is back
            try:
                await self._flush()
            except (RedisError, OSError) as exc:
                self._lost(exc)

    async def _flush(self) -> None:
        assert self._redis is not None
        while self._pending:
            batch = self._pending[:500]
            async with self._redis.pipeline(transaction=False) as pipe:
                for s in batch:
                    keys = [s.tpm_key, *(c for c, _, _ in s.counters)]
                    args: list[str | int | float] = [
                        s.request_id,
                        s.tokens,
                        self.window,
                        repr(s.cost),
                    ]
                    for _, seed, ttl in s.counters:
                        args += [repr(seed), ttl]
                    await self._settle(keys=keys, args=args, client=pipe)
                await pipe.execute()
            del self._pending[: len(batch)]

    # --- Redis away and back ------------------------------------------------------------------

    def _lost(self, exc: BaseException) -> None:
        self._connected = False
        if self._announced:
            self._announced = False
            reason = type(exc).__name__
            log.warning(
                "Redis at %s unavailable (%s): %s are counted in this process until it is back",
                _safe_url(self.url),
                reason,
                WHAT,
            )
            self.publish(SharedStateChanged(WHAT, False, reason, time.time()))
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(
                self._rejoin(), name="shared-probe"
            )

    async def _rejoin(self) -> None:
        assert self._redis is not None
        while True:
            await asyncio.sleep(_PROBE)
            try:
                await self._redis.ping()
            except (RedisError, OSError):
                continue
            self._connected = True
            if not self._announced:
                self._announced = True
                log.warning("Redis at %s is back: %s are shared again", _safe_url(self.url), WHAT)
                self.publish(SharedStateChanged(WHAT, True, None, time.time()))
            self._wake.set()  # the settlements queued meanwhile
            return


def _kind(budget: Budget) -> str:
    """b: refuses the request; d: downgrades it; p: a provider's (its models are skipped)."""
    if budget.scope == "provider":
        return "p"
    return "d" if budget.on_exceed == "downgrade" else "b"


def _safe_url(url: str) -> str:
    """The Redis URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
