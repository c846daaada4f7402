"""The attempt loop over a plan.

Each target is tried in order (at most `retry.attempts` times each), unless health says to
skip it (breaker open, cooling down, rate-limit budget spent, misconfigured). A failure
that another model could avoid moves on to the next target; the client's own 4xx comes back
as it is. A stream is committed to a target only once its first content token arrives, so a
stream that breaks or stalls before then fails over invisibly.

When every target is unavailable: a stored answer to the identical request (routes with
`stale_if_error`), else a wait for a target to come back (routes with `queue`), else
AllTargetsFailed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from turnout.events import AttemptFinished, Publish
from turnout.execute import guard
from turnout.execute.accumulate import Accumulator, replay
from turnout.execute.attempts import AllTargetsFailed, PassThroughError
from turnout.execute.deadlines import Deadlines
from turnout.execute.failures import backoff_delay, should_retry_same_target, timeout_error
from turnout.execute.stale import StaleCache
from turnout.execute.stream import Stream, close_quietly
from turnout.health import HealthEngine
from turnout.model import (
    Attempt,
    Delta,
    ErrorClass,
    Outcome,
    Request,
    Response,
    UpstreamError,
    Usage,
)
from turnout.model.tokens import estimate_prompt_tokens
from turnout.providers.base import Call
from turnout.routing import Plan, Target

T = TypeVar("T")
Once = Callable[[Target, "Progress"], Awaitable["T | UpstreamError"]]
_QUEUE_POLL = 0.25  # seconds between looks at a queued route's targets, at the most


@dataclass(slots=True)
class Progress:
    """What one request went through, across failover rounds (a queued route has several)."""

    attempts: list[Attempt] = field(default_factory=list)
    errors: list[UpstreamError] = field(default_factory=list)
    tries: int = 0
    # invalid answers, told to health only once some model answered this request validly:
    # a schema no model can satisfy is the client's doing, and must not open breakers
    held: list[Outcome] = field(default_factory=list)


@dataclass(slots=True)
class Completion:
    response: Response
    target: Target
    attempts: list[Attempt]
    tries: int
    stale_age: float | None = None  # set when this is a stored answer
    validated: bool = False  # the output guard checked this answer


def _rewritten(deltas: list[Delta], content: str) -> list[Delta]:
    """A buffered stream whose text is replaced by `content` (in its first content delta)."""
    out, placed = [], False
    for delta in deltas:
        if delta.content is not None:
            if placed:
                delta = dataclasses.replace(delta, content=None)
            else:
                delta, placed = dataclasses.replace(delta, content=content), True
        out.append(delta)
    return out


class Executor:
    def __init__(self, health: HealthEngine, publish: Publish | None = None) -> None:
        self.health = health
        # each attempt's outcome is published as AttemptFinished; health subscribes. Without
        # a bus (an executor built alone), the outcome goes to health directly, as before.
        self.publish = publish or self._to_health
        self.stale = StaleCache()
        self.deadlines = Deadlines()

    # --- the two entry points --------------------------------------------------------------

    async def complete(
        self, plan: Plan, request: Request, skipped: list[Attempt] | None = None
    ) -> Completion:
        async def once(target: Target, progress: Progress):
            call = Call(target.upstream_model, target.timeouts)
            started, t0 = time.time(), time.perf_counter()
            try:
                async with self.deadlines.timeout(target.timeouts.total):
                    response = await target.provider.complete(request, call)
            except TimeoutError:
                error = timeout_error("total")
            except UpstreamError as exc:
                error = exc
            else:
                elapsed = time.perf_counter() - t0
                invalid = guarded and guard.check(response, request, plan.output_schema)
                if not invalid:
                    self._outcome(plan, target, started, elapsed, None, None, response.usage, call)
                    if plan.stale_max_age is not None:
                        self.stale.put(plan.route, request, response, target.name)
                    return Completion(
                        response, target, progress.attempts, progress.tries, validated=guarded
                    )
                error = invalid
            elapsed = time.perf_counter() - t0
            self._outcome(plan, target, started, elapsed, error, call=call, held=progress.held)
            return error

        guarded = guard.applies(request, plan.output_schema)

        try:
            return await self._serve(plan, request, once, skipped)
        except AllTargetsFailed as exc:
            target, response, age = self._stale_or_raise(plan, request, exc)
            return Completion(response, target, exc.attempts, exc.tries, stale_age=age)

    async def stream(
        self, plan: Plan, request: Request, skipped: list[Attempt] | None = None
    ) -> Stream:
        async def once(target: Target, progress: Progress):
            return await self._open(plan, target, request, progress)

        try:
            return await self._serve(plan, request, once, skipped)
        except AllTargetsFailed as exc:
            target, response, age = self._stale_or_raise(plan, request, exc)
            return Stream(target, exc.attempts, exc.tries, replay(response), stale_age=age)

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
        return target, entry.response, time.time() - entry.stored_at

    async def _serve(
        self, plan: Plan, request: Request, once: Once, skipped: list[Attempt] | None = None
    ) -> T:
        """The failover loop; for a queued route, again as targets come back, until max_wait.
        A route with a stored answer to serve does not wait: stale beats slow."""
        progress = Progress(attempts=list(skipped or ()))
        try:
            return await self._failover(plan, request, once, progress)
        except AllTargetsFailed as exc:
            wait = plan.queue_max_wait
            if wait is None or self._stale(plan, request) is not None:
                raise
            failure = exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0:
            back_in = failure.retry_after or _QUEUE_POLL
            await asyncio.sleep(min(max(back_in, 0.01), _QUEUE_POLL, left))
            if not self._any_available(plan):
                continue
            try:
                return await self._failover(plan, request, once, progress)
            except AllTargetsFailed as exc:
                failure = exc
        raise failure

    def _any_available(self, plan: Plan) -> bool:
        now = time.time()
        return any(self.health.available_at(t.name, now) <= now for t in plan.targets)

    # --- the failover loop ---------------------------------------------------------------------

    async def _failover(self, plan: Plan, request: Request, once: Once, progress: Progress) -> T:
        """Try each target in order, retrying transient failures on the same target."""
        attempts, errors = progress.attempts, progress.errors
        too_long_for: int | None = None
        for target in plan.targets:
            skip = self._skip_reason(target, request, too_long_for)
            if skip:
                attempts.append(Attempt(target.name, skip))
                continue
            for attempt in range(max(plan.retry.attempts, 1 + plan.guard_retries)):
                progress.tries += 1
                result = await once(target, progress)
                if not isinstance(result, UpstreamError):
                    for outcome in progress.held:  # another answer was valid: these count
                        self.publish(AttemptFinished(outcome))
                    return result
                error = result
                if not error.error_class.fails_over:  # model.errors.POLICY
                    raise PassThroughError(error, attempts, target, progress.tries)
                if not should_retry_same_target(error, attempt, plan.retry, plan.guard_retries):
                    break
                await asyncio.sleep(backoff_delay(error, attempt, plan.retry))
            errors.append(error)
            attempts.append(Attempt(target.name, error.reason))
            if error.error_class is ErrorClass.CONTEXT_LENGTH:
                # later targets no larger than this one would fail the same way
                too_long_for = max(too_long_for or 0, target.model.context_window or 0) or None
        raise AllTargetsFailed(
            plan, attempts, errors, self._retry_after(plan, errors), progress.tries
        )

    def _retry_after(self, plan: Plan, errors: list[UpstreamError]) -> float:
        """When the first target is expected back: health's view, or what upstreams said.
        Before health knows anything (the first failures of a dead route, no breaker open
        yet), the cooldown health itself gives a 429 that does not say when to come back:
        a client is always told when to retry, never left to hammer or give up."""
        now = time.time()
        back = [self.health.available_at(t.name, now) - now for t in plan.targets]
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
        health = self.health.models[target.name]
        prompt = estimate_prompt_tokens(request) if health.limits.windows else 0
        return self.health.skip_reason(target.name, time.time(), prompt, request.max_tokens or 0)

    # --- one streaming attempt --------------------------------------------------------------

    async def _open(
        self, plan: Plan, target: Target, request: Request, progress: Progress
    ) -> Stream | UpstreamError:
        """Start a stream and wait for its first content token within the TTFT timeout."""
        call = Call(target.upstream_model, target.timeouts)
        started, t0 = time.time(), time.perf_counter()
        loop, _ = self.deadlines.task()
        deadline = loop.time() + target.timeouts.total
        ttft_deadline = min(deadline, loop.time() + target.timeouts.ttft)
        source = target.provider.stream(request, call)
        buffered: list[Delta] = []
        try:
            async with self.deadlines.timeout_at(ttft_deadline):
                async for delta in source:
                    buffered.append(delta)
                    if delta.has_content or delta.finish_reason:
                        break
                else:
                    if not buffered:
                        raise UpstreamError(ErrorClass.STREAM_BROKEN, "stream ended empty")
            ttft = time.perf_counter() - t0
            if plan.buffer_streams and guard.applies(request, plan.output_schema):
                # the client asked for JSON and the route validates streams: the whole answer
                # is read and checked before the first byte goes out
                async with self.deadlines.timeout_at(deadline):
                    buffered += [delta async for delta in source]
                whole = Accumulator()
                for delta in buffered:
                    whole.add(delta)
                answer = whole.response("", target.name)
                invalid = guard.check(answer, request, plan.output_schema)
                if invalid:
                    raise invalid
                if answer.content is not None:  # the guard may have unwrapped a code fence
                    buffered = _rewritten(buffered, answer.content)
        except TimeoutError:
            error = timeout_error("ttft" if ttft_deadline < deadline else "total")
        except UpstreamError as exc:
            error = exc
        else:

            def finish(err: UpstreamError | None, usage: Usage | None, kept: Accumulator | None):
                elapsed = time.perf_counter() - t0
                self._outcome(plan, target, started, elapsed, err, ttft, usage, call)
                if kept is not None:
                    self.stale.put(plan.route, request, kept.response("", target.name), target.name)

            keep = plan.stale_max_age is not None
            return Stream(
                target,
                progress.attempts,
                progress.tries,
                buffered,
                source,
                finish,
                deadline,
                keep,
                self.deadlines,
                first_token_at=started + ttft,
            )
        await close_quietly(source)
        elapsed = time.perf_counter() - t0
        self._outcome(plan, target, started, elapsed, error, call=call, held=progress.held)
        return error

    # --- probes -------------------------------------------------------------------------------

    async def probe(self, plan: Plan, target: Target) -> None:
        """A synthetic tiny request that tells a half-open or misconfigured model's fate."""
        request = Request(
            model=target.name,
            messages=[{"role": "user", "content": "ping"}],
            max_tokens=1,
            temperature=0,
        )
        call = Call(target.upstream_model, target.timeouts)
        started, t0 = time.time(), time.perf_counter()
        error = None
        try:
            async with self.deadlines.timeout(target.timeouts.total):
                await target.provider.complete(request, call)
        except TimeoutError:
            error = timeout_error("total")
        except UpstreamError as exc:
            error = exc
        self._outcome(plan, target, started, time.perf_counter() - t0, error, call=call, probe=True)

    # --- outcomes ------------------------------------------------------------------------------

    def _outcome(
        self,
        plan: Plan,
        target: Target,
        started: float,
        elapsed: float,
        error: UpstreamError | None = None,
        ttft: float | None = None,
        usage: Usage | None = None,
        call: Call | None = None,
        probe: bool = False,
        held: list[Outcome] | None = None,
    ) -> None:
        outcome = Outcome(
            route=plan.route,
            model=target.name,
            provider=target.provider.name,
            ok=error is None,
            error_class=error.error_class if error else None,
            status=error.status if error else (call.status if call else None),
            message=error.message if error else None,
            started=started,
            ttft=ttft,
            latency=elapsed,
            usage=usage,
            headers=call.headers if call else None,
            retry_after=error.retry_after if error else None,
            probe=probe,
        )
        if (
            held is not None
            and error is not None
            and error.error_class is ErrorClass.INVALID_OUTPUT
        ):
            held.append(outcome)
            return
        self.publish(AttemptFinished(outcome))

    def _to_health(self, event: AttemptFinished) -> None:
        self.health.record(event.outcome)
