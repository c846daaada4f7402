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

The scheduler (execute/scheduler.py) makes the attempts; this module decides when, keeps
the buckets and runs the race.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from turnout.accounting.cost import cost_usd
from turnout.config.schema import HedgeConfig
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


class HedgeBucket:
    """The hedges a route may still make: each request earns `max_extra`, a hedge costs one."""

    __slots__ = ("capacity", "max_extra", "tokens")

    def __init__(self, max_extra: float) -> None:
        self.max_extra = max_extra
        self.capacity = max(1.0, max_extra * _BANKED)
        self.tokens = 1.0  # the first slow request may be hedged at once

    def arrived(self) -> None:
        self.tokens = min(self.capacity, self.tokens + self.max_extra)

    def take(self) -> bool:
        if self.tokens < 1.0 - 1e-9:  # ten 0.1s summed are a hair under 1.0
            return False
        self.tokens -= 1.0
        return True

    def refund(self) -> None:
        self.tokens = min(self.capacity, self.tokens + 1.0)


class HedgeBuckets:
    """One bucket per route, kept across config reloads while its `max_extra` is the same."""

    def __init__(self) -> None:
        self._buckets: dict[str, HedgeBucket] = {}

    def __call__(self, route: str, hedge: HedgeConfig) -> HedgeBucket:
        bucket = self._buckets.get(route)
        if bucket is None or bucket.max_extra != hedge.max_extra:
            bucket = self._buckets[route] = HedgeBucket(hedge.max_extra)
        return bucket


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
    model = health.models.get(target.name)
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
