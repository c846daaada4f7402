"""Hedged requests: when a route's first attempt is slow, a second one on its next target.

A route with `hedge: {after, max_extra}` gives its first attempt `after` (a duration, or the
target's recent p95 for this prompt size) to produce a first token (a stream) or its answer
(a whole one). Past that, a second attempt starts on the next available target; the first
to succeed wins and the other is cancelled (its upstream connection closed, nothing told to
health: losing a race says nothing about a model). An attempt that fails while the other
runs is just a failure: the other carries on as the failover. A client error ends the race
at once (the other would fail the same way).

Hedges are capped by a token bucket per route that requests refill: each request earns
`max_extra` of a hedge, so however long the primary stays slow, hedges stay within that
share of the route's requests (plus what the bucket holds: at most `_BANKED` requests'
worth, and at least one hedge).

With `state: {backend: redis}` the bucket is the fleet's (`FleetHedges`): one per route in
Redis for every process sharing it, so N processes bank and spend one bucket, not N. The
hot path stays cheap: a request's earnings are added up here and written every `_FLUSH`
seconds (no round trip per request), and a hedge decision is one Lua script that adds this
process's unwritten earnings and takes a token atomically. Earnings not yet written by the
other processes are missing from the bucket for a moment: the cap errs on the side of fewer
hedges. Redis away: this process's own bucket decides, with a warning and an event
(accounting/link.py), until Redis is back.

The scheduler (execute/scheduler.py) makes the attempts; this module decides when, keeps
the buckets and runs the race.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from turnout.accounting.cost import cost_usd
from turnout.accounting.link import RedisLink
from turnout.config.schema import HedgeConfig
from turnout.events import Publish
from turnout.execute.attempt import UpstreamAttempt
from turnout.health import HealthEngine
from turnout.health.latency import bucket_for
from turnout.model import Attempt, Request, Response, UpstreamError
from turnout.model.tokens import estimate_prompt_tokens
from turnout.routing import Target

MIN_SAMPLES = 20  # `after: p95` trusts health's figure from this many samples on
_BANKED = 50  # a bucket holds what this many requests earn (and at least one hedge)
_RECENT = 128  # races remembered per target: as many as health keeps latency samples
_MAX_QUANTILE = 0.99  # of health's samples, however many first attempts were cut short
_FLUSH = 0.5  # seconds between writes of the hedges this process's requests earned
_IDLE_TTL = 86_400  # seconds a fleet bucket outlives its route's last request
PRIMARY_LOST = "hedged(lost)"  # the slow first attempt, cancelled: the hedge answered first
HEDGE_LOST = "hedge(lost)"  # the hedge, cancelled: the first attempt answered first


@dataclass(slots=True)
class HedgeAttempt(Attempt):
    """One of a hedged pair that did not answer: it lost the race (`hedged(lost)` for the
    first attempt, `hedge(lost)` for the hedge) or failed while the other ran (its error's
    reason). It says who hedged whom, for the x-turnout-hedged header, and what the loser
    cost where its upstream reported usage before it was cancelled (in the ledger row)."""

    primary: str = ""  # the target that was hedged
    hedge: str = ""  # the target that hedged it
    cost_usd: float | None = None


# KEYS[1]: a route's fleet bucket (a hash: tokens). ARGV: what this process earned since
# its last write (requests times max_extra, plus refunds), capacity, take (1: a hedge asks
# for a token). Answers 1 when the hedge may start (its token taken), else 0.
_HEDGE = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or '1')
tokens = math.min(tonumber(ARGV[2]), tokens + tonumber(ARGV[1]))
local granted = 0
if ARGV[3] == '1' and tokens >= 1 - 1e-9 then
  tokens = tokens - 1
  granted = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens))
redis.call('EXPIRE', KEYS[1], ARGV[4])
return granted
"""


class FleetHedges:
    """The routes' hedge buckets in Redis, shared by every process of the fleet."""

    WHAT = "hedge caps"

    def __init__(self, url: str, prefix: str, publish: Publish) -> None:
        self.prefix = prefix
        self.link = RedisLink(url, self.WHAT, publish)
        self._script: Any = None
        self._earned: dict[str, tuple[float, float]] = {}  # bucket -> (unwritten, capacity)
        self._writer: asyncio.Task[None] | None = None

    def key(self, route: str, max_extra: float) -> str:
        # a new max_extra is a new bucket (as a process's own bucket is renewed on reload)
        return f"{self.prefix}:hedge:{route}:{max_extra:g}"

    def earn(self, key: str, tokens: float, capacity: float) -> None:
        """Tokens this process's requests (or a refund) add to the bucket: written in a
        batch by the writer, or with this process's next hedge decision, whichever is first."""
        earned = self._earned.get(key, (0.0, capacity))[0]
        self._earned[key] = (earned + tokens, capacity)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write(), name="hedge-caps-write"
            )

    async def take(self, key: str, capacity: float) -> bool | None:
        """Whether the fleet's bucket has a hedge for this request (taken if so): one round
        trip; None when Redis is away (the caller's own bucket decides)."""
        script = self._hedge_script()  # (the link is opened on first use)
        if not self.link.shared:
            return None
        earned = self._earned.pop(key, (0.0, capacity))[0]
        try:
            granted = await script(keys=[key], args=[repr(earned), repr(capacity), 1, _IDLE_TTL])
        except (RedisError, OSError) as exc:
            self._earned[key] = (self._earned.get(key, (0.0, capacity))[0] + earned, capacity)
            self.link.lost(exc)
            return None
        return bool(granted)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer
        await self.link.close()

    def _hedge_script(self) -> Any:
        """The Lua script, registered on the link's client (made on first use: a fleet
        whose routes never hedge opens no connection)."""
        if self._script is None:
            self._script = self.link.open().register_script(_HEDGE)
        return self._script

    async def _write(self) -> None:
        """Every `_FLUSH` seconds while requests earn, their earnings (one pipeline)."""
        while self._earned:
            await asyncio.sleep(_FLUSH)
            script = self._hedge_script()
            if not self.link.shared:
                continue  # kept until Redis is back (the probe rejoins it)
            batch, self._earned = self._earned, {}
            try:
                async with self.link.redis.pipeline(transaction=False) as pipe:
                    for key, (earned, capacity) in batch.items():
                        args = [repr(earned), repr(capacity), 0, _IDLE_TTL]
                        await script(keys=[key], args=args, client=pipe)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                for key, (earned, capacity) in batch.items():  # written once Redis is back
                    unwritten = self._earned.get(key, (0.0, capacity))[0]
                    self._earned[key] = (unwritten + earned, capacity)
                self.link.lost(exc)


class HedgeBucket:
    """The hedges a route may still make: each request earns `max_extra`, a hedge costs one.
    With a fleet, the fleet's bucket decides while Redis is there; this process's own one
    is kept beside it (spent by the hedges made here) and decides while Redis is away."""

    __slots__ = ("capacity", "fleet", "key", "max_extra", "tokens")

    def __init__(self, max_extra: float, fleet: FleetHedges | None = None, key: str = "") -> None:
        self.max_extra = max_extra
        self.capacity = max(1.0, max_extra * _BANKED)
        self.tokens = 1.0  # the first slow request may be hedged at once
        self.fleet = fleet
        self.key = key

    def arrived(self) -> None:
        self.tokens = min(self.capacity, self.tokens + self.max_extra)
        if self.fleet is not None:
            self.fleet.earn(self.key, self.max_extra, self.capacity)

    async def take(self) -> bool:
        """Whether a hedge may start now (its token taken)."""
        if self.fleet is not None:
            granted = await self.fleet.take(self.key, self.capacity)
            if granted is not None:
                if granted:
                    self.tokens = max(0.0, self.tokens - 1.0)  # the local view keeps step
                return granted
        return self.take_local()

    def take_local(self) -> bool:
        if self.tokens < 1.0 - 1e-9:  # ten 0.1s summed are a hair under 1.0
            return False
        self.tokens -= 1.0
        return True

    def refund(self) -> None:
        self.tokens = min(self.capacity, self.tokens + 1.0)
        if self.fleet is not None and self.fleet.link.shared:
            self.fleet.earn(self.key, 1.0, self.capacity)


class HedgeBuckets:
    """One bucket per route, kept across config reloads while its `max_extra` is the same;
    the fleet's, when `fleet` is given (`state: {backend: redis}`)."""

    def __init__(self, fleet: FleetHedges | None = None) -> None:
        self.fleet = fleet
        self._buckets: dict[str, HedgeBucket] = {}

    def __call__(self, route: str, hedge: HedgeConfig) -> HedgeBucket:
        bucket = self._buckets.get(route)
        if bucket is None or bucket.max_extra != hedge.max_extra:
            key = self.fleet.key(route, hedge.max_extra) if self.fleet is not None else ""
            bucket = self._buckets[route] = HedgeBucket(hedge.max_extra, self.fleet, key)
        return bucket

    async def close(self) -> None:
        if self.fleet is not None:
            await self.fleet.close()


class LostRaces:
    """How often each target lately lost a race as the first attempt. Health never hears of
    those (a cancelled attempt records nothing), so its samples lack exactly the slowest
    answers, and their p95 alone would drift down and hedge ever more often: `hedge_delay`
    reads health's samples as the (1 - lost share) of answers that were not cut short."""

    def __init__(self) -> None:
        self._recent: dict[str, deque[bool]] = {}

    def add(self, model: str, lost: bool) -> None:
        recent = self._recent.get(model)
        if recent is None:
            recent = self._recent[model] = deque(maxlen=_RECENT)
        recent.append(lost)

    def share(self, model: str) -> float:
        recent = self._recent.get(model)
        return sum(recent) / len(recent) if recent else 0.0


def hedge_delay(
    hedge: HedgeConfig, health: HealthEngine, lost: LostRaces, target: Target, request: Request
) -> float:
    """Seconds the first attempt gets before it is hedged. `after: p95` is the target's
    recent p95 for this prompt size: of TTFT for a stream, of the whole latency for a whole
    answer (it has no first token); `floor` while health has too few samples."""
    if hedge.after != "p95":
        return float(hedge.after)
    model = health.models.get(target.key)
    if model is None:
        return hedge.floor
    series_by_size = model.latency.ttft if request.stream else model.latency.total
    series = series_by_size.get(bucket_for(estimate_prompt_tokens(request)))
    if series is None or len(series.samples) < MIN_SAMPLES:
        return hedge.floor
    # the answers cut short were all slower than the rest: the p95 of all of them is the
    # (0.95 / kept share) quantile of those health saw; never past their p99, so that one
    # or two very slow answers it did see (a hedge that lost too) cannot set the delay
    samples = sorted(series.samples)
    quantile = min(_MAX_QUANTILE, 0.95 / max(1.0 - lost.share(target.name), 0.05))
    position = quantile * (len(samples) - 1)
    low = int(position)
    high = min(low + 1, len(samples) - 1)
    return samples[low] + (samples[high] - samples[low]) * (position - low)


@dataclass(slots=True)
class Runner:
    """One attempt of a hedged pair, running as its own task."""

    target: Target
    attempt: UpstreamAttempt
    task: asyncio.Task[Any]
    abandoned: bool = False  # it lost the race (or the request was given up)

    @classmethod
    def start(
        cls, target: Target, attempt: UpstreamAttempt, run: Callable[[UpstreamAttempt], Awaitable]
    ) -> Runner:
        return cls(target, attempt, asyncio.ensure_future(run(attempt)))

    async def abandon(self) -> None:
        """Cancel it: a call still waiting is cut (its connection closed by the transport), a
        stream already opened is closed; nothing is recorded for it."""
        self.abandoned = True
        if not self.task.done():
            self.task.cancel()
            await asyncio.wait((self.task,))  # (never raises: our own cancellation still can)
        await self.attempt.cancel()
        if self.task.done() and not self.task.cancelled():
            self.task.exception()  # retrieved: a failure of a cancelled loser is not logged

    def cost(self) -> float | None:
        """What the upstream said this attempt used before it was cancelled, priced."""
        usage = self.attempt.usage_seen
        if self.task.done() and not self.task.cancelled():
            result = self.task.result() if self.task.exception() is None else None
            if isinstance(result, Response):
                usage = result.usage
        return cost_usd(self.target.price, usage) if usage is not None else None


async def race(
    first: Runner, second: Runner, attempts: list[Attempt], errors: list[UpstreamError]
) -> tuple[Target, Any]:
    """The first success of the pair, with its target; the other is cancelled and listed
    in `attempts`. A failure while the other runs is listed and the other carries on; the
    last failure (or a client error, at once) is returned for the failover loop to judge."""
    running = [first, second]
    primary, hedge = first.target.name, second.target.name
    try:
        while True:
            await asyncio.wait([r.task for r in running], return_when=asyncio.FIRST_COMPLETED)
            for runner in [r for r in running if r.task.done()]:  # the first attempt first
                running.remove(runner)
                result = runner.task.result()
                if isinstance(result, UpstreamError) and result.error_class.fails_over and running:
                    attempts.append(HedgeAttempt(runner.target.name, result.reason, primary, hedge))
                    errors.append(result)
                    continue
                for other in running:
                    await other.abandon()
                    reason = PRIMARY_LOST if other is first else HEDGE_LOST
                    attempts.append(
                        HedgeAttempt(other.target.name, reason, primary, hedge, other.cost())
                    )
                return runner.target, result
    except BaseException:
        # the request itself was cancelled (its client left, the shutdown): both go
        for runner in running:
            await runner.abandon()
        raise
