"""The scheduler: which upstream attempts a request makes, in what order, and when.

Each target is tried in order (at most `retry.attempts` times each), unless health says to
skip it (breaker open, cooling down, rate-limit budget spent, misconfigured). A failure
that another model could avoid moves on to the next target; the client's own 4xx comes back
as it is. A stream is committed to a target only once its first content token arrives, so a
stream that breaks or stalls before then fails over invisibly.

When every target is unavailable: a stored answer to the identical request (routes with
`stale_if_error`), else a wait for a target to come back (routes with `queue`), else
AllTargetsFailed.

Each try is an UpstreamAttempt (execute/attempt.py) that records its own outcome. `_try` is
the one place a try is made; on a route with `hedge:` `_hedged` makes it instead, and starts
a second attempt on the next target when the first is slow (execute/hedge.py). `continuation`
is asked for a replacement when a committed stream breaks. A long prompt whose count routing
did not wait for (`pending`) makes its first try with `speculate` while the count runs
(execute/speculate.py); later targets wait for the count and are filtered by it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from turnout import clock
from turnout.events import AttemptFinished, Publish
from turnout.execute import guard
from turnout.execute.accumulate import replay
from turnout.execute.attempt import UpstreamAttempt
from turnout.execute.deadlines import Deadlines
from turnout.execute.failures import backoff_delay, should_retry_same_target
from turnout.execute.hedge import HedgeBuckets, LostRaces, Runner, hedge_delay, race
from turnout.execute.no_answer import AllTargetsFailed, PassThroughError
from turnout.execute.speculate import CountSkip, settle, speculate
from turnout.execute.stale import StaleCache
from turnout.execute.stream import Stream
from turnout.health import HealthEngine
from turnout.model import Attempt, ErrorClass, Outcome, Request, Response, UpstreamError
from turnout.model.tokens import estimate_prompt_tokens
from turnout.routing import Plan, Target
from turnout.routing.pending_count import PendingCount

T = TypeVar("T")
# one try at one target: its answer (a Response, a Stream) or why it failed
Try = Callable[[UpstreamAttempt], Awaitable["T | UpstreamError"]]
_QUEUE_POLL = 0.25  # seconds between looks at a queued route's targets, at the most
_PROBE = [{"role": "user", "content": "ping"}]


@dataclass(slots=True)
class Progress:
    """What one request went through, across failover rounds (a queued route has several)."""

    attempts: list[Attempt] = field(default_factory=list)
    errors: list[UpstreamError] = field(default_factory=list)
    tries: int = 0
    # invalid answers, told to health only once some model answered this request validly:
    # a schema no model can satisfy is the client's doing, and must not open breakers
    held: list[Outcome] = field(default_factory=list)
    hedge_earned: bool = False  # this request has refilled its route's hedge bucket
    pending: PendingCount | None = None  # the prompt's count, when routing did not wait for it


@dataclass(slots=True)
class Completion:
    response: Response
    target: Target
    attempts: list[Attempt]
    tries: int
    stale_age: float | None = None  # set when this is a stored answer
    validated: bool = False  # the output guard checked this answer


class Scheduler:
    def __init__(
        self,
        health: HealthEngine,
        publish: Publish | None = None,
        hedge_buckets: HedgeBuckets | None = None,
    ) -> None:
        self.health = health
        # each attempt's outcome is published as AttemptFinished; health subscribes. Without
        # a bus (a scheduler built alone), the outcome goes to health directly.
        self.publish = publish or self._to_health
        self.stale = StaleCache()
        self.deadlines = Deadlines()
        # per route: the hedges it may still make (the fleet's, given one: execute/hedge.py)
        self.hedge_buckets = hedge_buckets or HedgeBuckets()
        self.lost_races = LostRaces()  # per model: how often its first attempts were cut short

    # --- the two entry points --------------------------------------------------------------

    async def complete(
        self,
        plan: Plan,
        request: Request,
        skipped: list[Attempt] | None = None,
        pending: PendingCount | None = None,
    ) -> Completion:
        guarded = guard.applies(request, plan.output_schema)
        progress = Progress(attempts=list(skipped) if skipped else [], pending=pending)
        run: Try = lambda attempt: attempt.complete(guarded)
        try:
            try:  # (`_serve` spelt out: one coroutine level less on every request's path)
                served: tuple[Response, Target] = await self._failover(plan, request, run, progress)
            except AllTargetsFailed as exc:
                served = await self._queued_or_raise(plan, request, run, progress, exc)
        except AllTargetsFailed as exc:
            target, response, age = self._stale_or_raise(plan, request, exc)
            return Completion(response, target, exc.attempts, exc.tries, stale_age=age)
        response, target = served
        return Completion(response, target, progress.attempts, progress.tries, validated=guarded)

    async def stream(
        self,
        plan: Plan,
        request: Request,
        skipped: list[Attempt] | None = None,
        pending: PendingCount | None = None,
    ) -> Stream:
        progress = Progress(attempts=list(skipped) if skipped else [], pending=pending)
        try:
            served: tuple[Stream, Target] = await self._serve(
                plan,
                request,
                lambda attempt: attempt.open(progress.attempts, progress.tries),
                progress,
            )
        except AllTargetsFailed as exc:
            target, response, age = self._stale_or_raise(plan, request, exc)
            return Stream(target, exc.attempts, exc.tries, replay(response), stale_age=age)
        return served[0]

    async def continuation(self, stream: Stream, error: UpstreamError) -> Stream | None:
        """A stream to carry on a committed one that broke with `error`, or None: the client
        is then told the stream failed. Routes with `on_stream_break: continue` have the next
        available target continue the answer (execute/continuation.py); the relay asks."""
        from turnout.execute.continuation import continue_stream  # (imported on a rare break)

        return await continue_stream(stream, error, self.health, self.publish, self.deadlines)

    # --- when every target is unavailable ------------------------------------------------------

    def _stale_or_raise(
        self, plan: Plan, request: Request, failure: AllTargetsFailed
    ) -> tuple[Target, Response, float]:
        """The stored answer for a route with stale_if_error, or the failure raised again."""
        entry = self._stale(plan, request)
        if entry is None:
            raise failure
        return entry

    def _stale(self, plan: Plan, request: Request) -> tuple[Target, Response, float] | None:
        if plan.stale_max_age is None:
            return None
        entry = self.stale.get(plan.route, request, plan.stale_max_age)
        if entry is None:
            return None
        target = next(t for t in plan.targets if t.name == entry.model)
        return target, entry.response, clock.now() - entry.stored_at

    async def _serve(
        self, plan: Plan, request: Request, run: Try, progress: Progress
    ) -> tuple[T, Target]:
        """The failover loop; for a queued route, again as targets come back, until max_wait.
        A route with a stored answer to serve does not wait: stale beats slow."""
        try:
            return await self._failover(plan, request, run, progress)
        except AllTargetsFailed as exc:
            return await self._queued_or_raise(plan, request, run, progress, exc)

    async def _queued_or_raise(
        self, plan: Plan, request: Request, run: Try, progress: Progress, exc: AllTargetsFailed
    ) -> tuple[T, Target]:
        """After a failover round failed: a queued route waits for a target to come back."""
        wait = plan.queue_max_wait
        if wait is None or self._stale(plan, request) is not None:
            raise exc
        return await self._queued(plan, request, run, progress, wait, exc)

    async def _queued(
        self,
        plan: Plan,
        request: Request,
        run: Try,
        progress: Progress,
        wait: float,
        failure: AllTargetsFailed,
    ) -> tuple[T, Target]:
        # max_wait is a window on the gateway's clock, like the cooldowns it waits out (in a
        # scenario both are simulated); the polls between looks stay real
        deadline = clock.monotonic() + wait
        while (left := deadline - clock.monotonic()) > 0:
            back_in = failure.retry_after or _QUEUE_POLL
            await asyncio.sleep(
                min(max(back_in, 0.01) / clock.speed, _QUEUE_POLL, left / clock.speed)
            )
            if not self._any_available(plan):
                continue
            try:
                return await self._failover(plan, request, run, progress)
            except AllTargetsFailed as exc:
                failure = exc
        raise failure

    def _any_available(self, plan: Plan) -> bool:
        now = clock.now()
        return any(self.health.available_at(t.key, now) <= now for t in plan.targets)

    # --- the failover loop ---------------------------------------------------------------------

    async def _failover(
        self, plan: Plan, request: Request, run: Try, progress: Progress
    ) -> tuple[T, Target]:
        """Try each target in order, retrying transient failures on the same target."""
        attempts, errors = progress.attempts, progress.errors
        too_long_for: int | None = None
        targets = iter(plan.targets)  # a hedge takes the next target from here
        for target in targets:
            skip = self._skip_reason(target, request, too_long_for)
            if not skip and progress.pending is not None and progress.tries:
                skip = await self._counted_skip(plan, target, progress)
            if skip:
                attempts.append(Attempt(target.key, skip))
                continue
            for attempt in range(max(plan.retry.attempts, 1 + plan.guard_retries)):
                progress.tries += 1
                if plan.hedge is None:
                    result = await self._try(plan, target, request, run, progress)
                else:  # the winner's target (or the last to fail) from here on
                    target, result = await self._hedged(
                        plan, target, request, run, progress, targets, too_long_for
                    )
                if isinstance(result, CountSkip):
                    break  # the count, ended during the try, rules this target out
                if not isinstance(result, UpstreamError):
                    for outcome in progress.held:  # another answer was valid: these count
                        self.publish(AttemptFinished(outcome))
                    return result, target
                error = result
                if not error.error_class.fails_over:  # model.errors.POLICY
                    raise PassThroughError(error, attempts, target, progress.tries)
                if not should_retry_same_target(error, attempt, plan.retry, plan.guard_retries):
                    break
                await asyncio.sleep(backoff_delay(error, attempt, plan.retry))
            if isinstance(result, CountSkip):
                attempts.append(Attempt(target.key, result.reason))
                continue
            errors.append(error)
            attempts.append(Attempt(target.key, error.reason))
            if error.error_class is ErrorClass.CONTEXT_LENGTH:
                # later targets no larger than this one would fail the same way
                too_long_for = max(too_long_for or 0, target.model.context_window or 0) or None
        raise AllTargetsFailed(
            plan, attempts, errors, self._retry_after(plan, errors), progress.tries
        )

    def _try(
        self, plan: Plan, target: Target, request: Request, run: Try, progress: Progress
    ) -> Awaitable[T | UpstreamError | CountSkip]:
        """One try at `target` (a hedged route's tries are `_hedged`'s); while the prompt's
        count runs, alongside it (execute/speculate.py). Not a coroutine itself: the usual
        try is the attempt's own coroutine, one level less on every request's path."""
        if progress.pending is not None:
            return self._try_counting(plan, target, request, run, progress)
        return run(self._attempt(plan, target, request, progress))

    async def _try_counting(
        self, plan: Plan, target: Target, request: Request, run: Try, progress: Progress
    ) -> T | UpstreamError | CountSkip:
        """`_try` while the prompt's count is pending, or after it ended during a try."""
        pending = progress.pending
        assert pending is not None
        if not pending.done():
            result: T | UpstreamError | CountSkip = await speculate(
                plan,
                target,
                pending,
                progress.attempts,
                lambda: self._attempt(plan, target, request, progress),
                run,
            )
            return result
        # (a retry at the target whose first try the count ended during)
        await settle(plan, pending, progress.attempts)
        reason = pending.skip_reason(target)
        if reason is not None:
            return CountSkip(reason)
        return await run(self._attempt(plan, target, request, progress))

    async def _hedged(
        self,
        plan: Plan,
        target: Target,
        request: Request,
        run: Try,
        progress: Progress,
        targets: Iterator[Target],
        too_long_for: int | None,
    ) -> tuple[Target, T | UpstreamError]:
        """A try at `target` on a hedged route: past the hedge delay, and while the route's
        bucket allows, a second attempt on the next target `targets` has left; the first to
        answer wins (execute/hedge.py). Returns the target whose result it is."""
        hedge = plan.hedge
        assert hedge is not None
        bucket = self.hedge_buckets(plan.route, hedge)
        if not progress.hedge_earned:
            progress.hedge_earned = True
            bucket.arrived()
        first = Runner.start(target, self._attempt(plan, target, request, progress), run)
        delay = hedge_delay(hedge, self.health, self.lost_races, target, request)
        try:
            done, _ = await asyncio.wait((first.task,), timeout=delay)
        except BaseException:
            await first.abandon()  # the request was cancelled while it waited
            raise
        second = None
        if not done and await bucket.take():
            second = self._spare(targets, request, too_long_for, progress.attempts)
            if second is None:
                bucket.refund()  # nothing left to hedge with
        if second is None:
            result = await first.task
            if not isinstance(result, UpstreamError):
                self.lost_races.add(target.name, False)
            return target, result
        progress.tries += 1
        other = Runner.start(second, self._attempt(plan, second, request, progress), run)
        winner, result = await race(first, other, progress.attempts, progress.errors)
        if first.abandoned:  # cut short: slower than the answer that won
            self.lost_races.add(target.name, True)
        elif winner is target and not isinstance(result, UpstreamError):
            self.lost_races.add(target.name, False)  # (a failure is no sample either way)
        if isinstance(result, Stream):
            result.tries = progress.tries  # it was opened before the hedge was counted
        return winner, result

    @staticmethod
    async def _counted_skip(plan: Plan, target: Target, progress: Progress) -> str | None:
        """After the first try, a target waits for the prompt's count (long finished, as a
        rule: it ran during that try) and is skipped when it cannot hold the prompt."""
        pending = progress.pending
        assert pending is not None
        await settle(plan, pending, progress.attempts)
        return pending.skip_reason(target)

    def _spare(
        self,
        targets: Iterator[Target],
        request: Request,
        too_long_for: int | None,
        attempts: list[Attempt],
    ) -> Target | None:
        """The next target health lets this request try (those skipped are listed)."""
        for target in targets:
            skip = self._skip_reason(target, request, too_long_for)
            if not skip:
                return target
            attempts.append(Attempt(target.key, skip))
        return None

    def _attempt(
        self, plan: Plan, target: Target, request: Request, progress: Progress
    ) -> UpstreamAttempt:
        return UpstreamAttempt(
            plan, target, request, self.publish, self.deadlines, self.stale, progress.held
        )

    def _retry_after(self, plan: Plan, errors: list[UpstreamError]) -> float:
        """When the first target is expected back: health's view, or what upstreams said.
        Before health knows anything (the first failures of a dead route, no breaker open
        yet), the cooldown health itself gives a 429 that does not say when to come back:
        a client is always told when to retry, never left to hammer or give up."""
        now = clock.now()
        back = [self.health.available_at(t.key, now) - now for t in plan.targets]
        back += [e.retry_after for e in errors if e.retry_after is not None]
        known = [b for b in back if b > 0]
        return min(known) if known else self.health.config.rate_limit_cooldown

    def _skip_reason(
        self, target: Target, request: Request, too_long_for: int | None
    ) -> str | None:
        """Why this target is not tried for this request; None to try it."""
        reason = target.provider.unavailable_reason()
        if reason:
            return f"misconfigured({reason})"
        if too_long_for is not None:
            window = target.model.context_window
            if window is not None and window <= too_long_for:
                return "context_length(skipped)"
        health = self.health.models[target.key]
        prompt = estimate_prompt_tokens(request) if health.limits.windows else 0
        return self.health.skip_reason(target.key, clock.now(), prompt, request.max_tokens or 0)

    # --- probes -------------------------------------------------------------------------------

    async def probe(self, plan: Plan, target: Target) -> None:
        """A synthetic tiny request that tells a half-open or misconfigured model's fate."""
        request = Request(model=target.name, messages=_PROBE, max_tokens=1, temperature=0)
        probe = UpstreamAttempt(plan, target, request, self.publish, self.deadlines, probe=True)
        await probe.complete()  # it records its outcome; the answer itself is not needed

    def _to_health(self, event: AttemptFinished) -> None:
        self.health.record(event.outcome)
