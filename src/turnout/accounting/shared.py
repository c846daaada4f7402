"""Key rate limits and budgets counted in Redis, so that every gateway process sharing the
state backend enforces one limit and one budget between them, not one each.

Admission is one Lua script, so one round trip: the key's sliding-minute request and token
windows, then every budget that applies (spent plus the live reservations of requests in
flight), then, when nothing refuses, the request's own reservation. The end of a request
settles it: its reservation goes and its real cost and tokens are added, in a queued write
off the client's path. Concurrent requests thus overshoot a budget by one request at most.

A budget's soft share is judged there too: the settlement that first takes a counter past it
sets the period's alert marker (SET NX), and only the process that set it raises the
BudgetAlert, so the fleet alerts once per budget and period, not once per process.

Redis away (accounting/link.py): `admit` answers None and the caller counts in this process
instead, with a warning and a SharedStateChanged event; a probe every second rejoins Redis,
and the settlements queued meanwhile are written then. No request fails for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from turnout.accounting.budgets import Budget
from turnout.accounting.link import RedisLink
from turnout.events import Publish

log = logging.getLogger("turnout.shared")

WHAT = "key limits and budgets"
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

# KEYS: tpm hash, then one hash per budget counter, then each counter's alert marker.
# ARGV: request id, tokens (0: none counted), window, cost (USD), then per counter: seed,
#       ttl, soft (USD; -1: none). Answers {index, spent, ...}: the counters whose soft
#       share this settlement was the first to pass (their marker was set here).
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local id, tokens, window, cost = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if tokens > 0 then
  redis.call('HINCRBY', KEYS[1], tostring(math.floor(now)), tokens)
  redis.call('EXPIRE', KEYS[1], math.ceil(window) + 1)
end
local n = (#KEYS - 1) / 2
local crossed = {}
for i = 2, n + 1 do
  local base = 5 + (i - 2) * 3
  redis.call('HDEL', KEYS[i], 'r:' .. id)
  if redis.call('HSETNX', KEYS[i], 'spent', ARGV[base]) == 1 then
    redis.call('EXPIRE', KEYS[i], ARGV[base + 1])
  end
  if tonumber(cost) > 0 then
    local spent = tonumber(redis.call('HINCRBYFLOAT', KEYS[i], 'spent', cost))
    local soft = tonumber(ARGV[base + 2])
    if soft >= 0 and spent >= soft
        and redis.call('SET', KEYS[i + n], '1', 'NX', 'EX', ARGV[base + 1]) then
      crossed[#crossed + 1] = tostring(i - 2)
      crossed[#crossed + 1] = tostring(spent)
    end
  end
end
return crossed
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
    budgets: tuple[Budget, ...] = ()  # each counter's budget (for its soft alert), in order


# a budget's soft share first passed by the fleet: (budget, its counter's spend); called in
# the one process whose settlement passed it
SoftAlert = Callable[[Budget, float], None]


class SharedCounters:
    def __init__(
        self,
        url: str,
        prefix: str,
        publish: Publish,
        window: float = 60.0,
        on_soft: SoftAlert | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.window = window
        self.on_soft = on_soft  # told of each soft share the fleet passed here first
        self._wake = asyncio.Event()
        # the settlements queued while Redis was away are written once it is back
        self.link = RedisLink(url, WHAT, publish, on_back=self._wake.set)
        self._pending: list[Settlement] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def shared(self) -> bool:
        """Whether counting is shared now (False while Redis is away)."""
        return self.link.shared

    def counter(self, scope: str, name: str, period: str, start: float) -> str:
        return f"{self.prefix}:budget:{scope}:{name}:{period}:{int(start)}"

    def rpm_key(self, key_id: str) -> str:
        return f"{self.prefix}:rpm:{key_id}"

    def tpm_key(self, key_id: str) -> str:
        return f"{self.prefix}:tpm:{key_id}"

    async def start(self) -> None:
        client = self.link.open()
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)
        await self.link.start()
        self._tasks = [asyncio.create_task(self._write(), name="shared-settle")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._pending and self.link.shared:
            with contextlib.suppress(RedisError, OSError):
                await self._flush()
        await self.link.close()

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
        if not self.link.shared:
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
            self.link.lost(exc)
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
            if not self.link.shared:
                continue  # the probe wakes us once Redis is back
            try:
                await self._flush()
            except (RedisError, OSError) as exc:
                self.link.lost(exc)

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[:500]
            async with self.link.redis.pipeline(transaction=False) as pipe:
                for s in batch:
                    counters = [c for c, _, _ in s.counters]
                    keys = [s.tpm_key, *counters, *(f"{c}:alerted" for c in counters)]
                    args: list[str | int | float] = [
                        s.request_id,
                        s.tokens,
                        self.window,
                        repr(s.cost),
                    ]
                    for i, (_, seed, ttl) in enumerate(s.counters):
                        soft = _soft_usd(s.budgets[i]) if i < len(s.budgets) else -1.0
                        args += [repr(seed), ttl, repr(soft)]
                    await self._settle(keys=keys, args=args, client=pipe)
                answers = await pipe.execute()
            del self._pending[: len(batch)]
            for s, crossed in zip(batch, answers, strict=True):
                self._alert(s, crossed)

    def _alert(self, settlement: Settlement, crossed: list[bytes | str]) -> None:
        """The soft shares this settlement passed first in the fleet: this process alerts."""
        if self.on_soft is None:
            return
        for i in range(0, len(crossed) - 1, 2):
            self.on_soft(settlement.budgets[int(crossed[i])], float(crossed[i + 1]))


def _soft_usd(budget: Budget) -> float:
    """The spend at which the budget alerts (-1: never)."""
    return budget.soft * budget.usd if budget.soft > 0 else -1.0


def _kind(budget: Budget) -> str:
    """b: refuses the request; d: downgrades it; p: a provider's (its models are skipped)."""
    if budget.scope == "provider":
        return "p"
    return "d" if budget.on_exceed == "downgrade" else "b"
