"""Pre-emptive pacing: a model's request headroom, as its rate-limit headers report it, is
shared between gateway processes and spent so that no request bursts into a 429.

Each answer's headers (`x-ratelimit-*-requests`, `anthropic-ratelimit-requests-*`) set the
model's window: what is left and when it resets (the lesser count wins within one window, as
requests in flight are not in the provider's count yet). Each request routed to the model
takes one request from it, atomically (a Lua script in Redis, or this process's memory):
- plenty left: taken at once;
- nearly spent (a quarter of the limit or less): taken only one every (rest of the window /
  requests left) seconds, so they spread over the window instead of bursting;
- nothing left, or not its turn yet: the request goes to the route's other models.
A window past its reset is assumed renewed at its limit and as long as the longest seen;
until an answer confirms it, its requests are spread too (one every window / limit seconds),
so that a wrong guess costs one request at most. Models without rate-limit headers are
never paced, and cost nothing (no round trip)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from turnout import clock
from turnout.events import AttemptFinished
from turnout.health.ratelimits import parse_windows

log = logging.getLogger("turnout.pacing")

NEARLY = 0.25  # share of a window's limit below which requests are spread over the window
LATE = 0.1  # seconds before a reset in which a request may land in the next window
_REFRESH = 1.0  # seconds between reads of which models the fleet paces

# The model's window as a hash: remaining, limit, reset_at (epoch seconds), span (the longest
# window seen), since (when the current window began, as far as known), confirmed (an answer
# has told of the current window), next_at (the next paced request), late (requests taken
# just before a reset: they may land in the next window, so they count in both).
_LOAD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local raw = redis.call('HMGET', KEYS[1], 'remaining', 'limit', 'reset_at', 'span', 'since',
  'confirmed', 'next_at', 'late')
local w = nil
if raw[1] then
  w = {}
  for i, name in ipairs({'remaining', 'limit', 'reset_at', 'span', 'since', 'confirmed',
      'next_at', 'late'}) do
    w[name] = tonumber(raw[i] or '0')
  end
  if now >= w.reset_at and w.span > 0 then
    -- the window is over: the next one is assumed full and as long, until an answer says
    local windows = math.floor((now - w.reset_at) / w.span) + 1
    w.since = w.reset_at + (windows - 1) * w.span
    w.reset_at = w.since + w.span
    w.remaining = w.limit
    if windows == 1 then w.remaining = w.limit - w.late end
    w.late, w.next_at, w.confirmed = 0, 0, 0
  end
end
local function save()
  redis.call('HSET', KEYS[1], 'remaining', w.remaining, 'limit', w.limit, 'reset_at',
    w.reset_at, 'span', w.span, 'since', w.since, 'confirmed', w.confirmed, 'next_at',
    w.next_at, 'late', w.late)
  redis.call('EXPIRE', KEYS[1], math.ceil(w.span * 2) + 60)
end
"""

# KEYS: the model's hash, the set of paced models. ARGV: remaining, limit, reset (epoch
# seconds, the gateway's clock), model, late (seconds).
_OBSERVE = (
    _LOAD
    + """
local remaining, limit, reset_at = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
if w == nil then
  w = {remaining = remaining, limit = limit, reset_at = reset_at, span = reset_at - now,
       since = 0, confirmed = 1, next_at = 0, late = 0}
  save()
  return 1
end
if reset_at <= now or reset_at <= w.since + tonumber(ARGV[5]) then
  save()
  return 0  -- an answer about a window already over
end
w.remaining = math.min(w.remaining, remaining)
w.reset_at, w.limit, w.confirmed = reset_at, limit, 1
w.span = math.max(w.span, reset_at - now)
save()
return 1
"""
)

# KEYS[1]: the model's hash. ARGV: nearly (share), late (seconds).
# Answers {0} taken (or nothing known), {1, wait} not now.
_TAKE = (
    _LOAD
    + """
if w == nil then return {0, ''} end
local nearly = math.max(1, math.ceil(w.limit * tonumber(ARGV[1])))
local strict = w.remaining <= nearly or w.confirmed == 0
local wait = nil
if w.remaining <= 0 then
  wait = w.reset_at - now
elseif strict and now < w.next_at then
  wait = w.next_at - now
else
  if strict then w.next_at = now + (w.reset_at - now) / w.remaining end
  w.remaining = w.remaining - 1
  if w.reset_at - now < tonumber(ARGV[2]) then w.late = w.late + 1 end
end
save()
if wait == nil then return {0, ''} end
return {1, tostring(wait)}
"""
)


@dataclass(slots=True)
class Headroom:
    """One model's window as this process knows it: the local mirror of the Lua above."""

    remaining: int
    limit: int
    reset_at: float
    span: float
    since: float = 0.0
    confirmed: bool = True
    next_at: float = 0.0
    late: int = 0

    def _roll(self, now: float) -> None:
        if now < self.reset_at or self.span <= 0:
            return
        windows = math.floor((now - self.reset_at) / self.span) + 1
        self.since = self.reset_at + (windows - 1) * self.span
        self.reset_at = self.since + self.span
        self.remaining = self.limit - (self.late if windows == 1 else 0)
        self.late, self.next_at, self.confirmed = 0, 0.0, False

    def observe(self, remaining: int, limit: int, reset_at: float, now: float) -> None:
        self._roll(now)
        if reset_at <= now or reset_at <= self.since + LATE:
            return  # an answer about a window already over
        self.remaining = min(self.remaining, remaining)
        self.reset_at, self.limit, self.confirmed = reset_at, limit, True
        self.span = max(self.span, reset_at - now)

    def take(self, now: float) -> float | None:
        self._roll(now)
        nearly = max(1, math.ceil(self.limit * NEARLY))
        strict = self.remaining <= nearly or not self.confirmed
        if self.remaining <= 0:
            return self.reset_at - now
        if strict and now < self.next_at:
            return self.next_at - now
        if strict:
            self.next_at = now + (self.reset_at - now) / self.remaining
        self.remaining -= 1
        if self.reset_at - now < LATE:
            self.late += 1
        return None


class Pacer:
    """The fleet's request headroom per model: in Redis with `state: {backend: redis}`
    (this process's own view while it is away), else in memory."""

    def __init__(self, url: str | None, prefix: str) -> None:
        self.prefix = prefix
        self.local: dict[str, Headroom] = {}
        self.paced: set[str] = set()  # models with a known window (here or in the fleet)
        self._redis: aioredis.Redis | None = None
        if url is not None:
            self._redis = aioredis.from_url(
                url, socket_connect_timeout=0.5, socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
            )
            self._take = self._redis.register_script(_TAKE)
            self._observe = self._redis.register_script(_OBSERVE)
        self._pending: list[tuple[str, int, int, float]] = []  # observations to share
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._away_until = 0.0
        self._warned = False

    def _key(self, model: str) -> str:
        return f"{self.prefix}:pace:{model}"

    @property
    def _members(self) -> str:
        return f"{self.prefix}:paced"

    async def start(self) -> None:
        if self._redis is not None:
            self._tasks = [
                asyncio.create_task(self._write(), name="pacing-write"),
                asyncio.create_task(self._refresh(), name="pacing-refresh"),
            ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._redis is not None:
            await self._redis.aclose()

    # --- learning: every answer's headers -------------------------------------------------

    def on_attempt(self, event: AttemptFinished) -> None:
        """The bus subscriber (inline, O(headers)): a requests window read off the answer."""
        outcome = event.outcome
        if not outcome.headers:
            return
        now = clock.now()
        # a relative reset (`6m0s`) counts from when the headers arrived: not from when the
        # attempt ended (read a stream's length later, the window would seem to end that much
        # later and be renewed that much late), nor from when it was sent (the upstream said
        # it a moment later: the window would seem to end that moment early, and the first
        # request of the "renewed" one land in the spent one, a 429)
        said = outcome.headers_at or outcome.started or now
        for window in parse_windows(outcome.headers, said):
            if window.kind != "requests" or window.reset_at is None or window.remaining is None:
                continue
            if window.reset_at <= now:
                continue  # a window already over: it tells nothing of the current one
            limit = window.limit if window.limit is not None else window.remaining
            if limit <= 0:
                # "none left" with no limit (a bare 429's headers): the 429's cooldown covers
                # it; a window renewed at a limit of 0 would never let a request through again
                continue
            model = outcome.model  # a deployment's own limits: `MODEL@DEPLOYMENT`
            if outcome.deployment is not None:
                model = f"{model}@{outcome.deployment}"
            self._learn(model, window.remaining, limit, window.reset_at, now)
            return

    def _learn(self, model: str, remaining: int, limit: int, reset_at: float, now: float) -> None:
        headroom = self.local.get(model)
        if headroom is None:
            self.local[model] = Headroom(remaining, limit, reset_at, reset_at - now)
        else:
            headroom.observe(remaining, limit, reset_at, now)
        self.paced.add(model)
        if self._redis is not None:
            self._pending.append((model, remaining, limit, reset_at))
            self._wake.set()

    # --- spending: one request ----------------------------------------------------------

    async def take(self, model: str) -> float | None:
        """None: the request may go to `model` now; else seconds until it could."""
        if model not in self.paced:
            return None
        if self._redis is not None and time.monotonic() >= self._away_until:
            try:
                answer = await self._take(keys=[self._key(model)], args=[NEARLY, LATE])
            except (RedisError, OSError) as exc:
                self._failed(exc)
            else:
                return float(answer[1]) if int(answer[0]) else None
        headroom = self.local.get(model)
        return headroom.take(clock.now()) if headroom is not None else None

    # --- Redis ----------------------------------------------------------------------------

    async def _write(self) -> None:
        assert self._redis is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for model, remaining, limit, reset_at in batch:  # in order: each counts
                        await self._observe(
                            keys=[self._key(model), self._members],
                            args=[remaining, limit, repr(reset_at), model, LATE],
                            client=pipe,
                        )
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                self._failed(exc)

    async def _refresh(self) -> None:
        """Which models the fleet paces: one another process learnt of is paced here too."""
        assert self._redis is not None
        while True:
            with contextlib.suppress(RedisError, OSError):
                members = await self._redis.smembers(self._members)
                self.paced |= {m.decode() if isinstance(m, bytes) else m for m in members}
            await asyncio.sleep(_REFRESH)

    def _failed(self, exc: BaseException) -> None:
        self._away_until = time.monotonic() + _REFRESH
        if not self._warned:
            self._warned = True
            log.warning(
                "Redis unavailable (%s): rate-limit headroom is paced per process until it is back",
                type(exc).__name__,
            )
