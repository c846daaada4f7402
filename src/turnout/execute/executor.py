"""The attempt loop over a plan.

Each target is tried in order (at most `retry.attempts` times each). A failure that another
model could avoid moves on to the next target; the client's own 4xx comes back as it is.
A stream is committed to a target only once its first content token arrives, so a stream
that breaks or stalls before then fails over invisibly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from turnout.execute.failures import backoff_delay, should_retry_same_target, timeout_error
from turnout.model import Delta, ErrorClass, Outcome, Request, Response, UpstreamError, Usage
from turnout.providers.base import Call
from turnout.routing import Plan, Target

log = logging.getLogger("turnout.execute")
T = TypeVar("T")


@dataclass(slots=True)
class Attempt:
    """A target that did not answer this request, and why (skipped or failed)."""

    model: str
    reason: str


class AllTargetsFailed(Exception):
    def __init__(self, plan: Plan, attempts: list[Attempt], errors: list[UpstreamError]) -> None:
        self.plan = plan
        self.attempts = attempts
        self.errors = errors
        waits = [e.retry_after for e in errors if e.retry_after is not None]
        self.retry_after = min(waits) if waits else None
        detail = "; ".join(f"{a.model}: {a.reason}" for a in attempts) or "no targets"
        super().__init__(f"no target of {plan.route!r} could answer ({detail})")


class PassThroughError(Exception):
    """The client's own request was refused upstream: returned to the client as it is."""

    def __init__(self, error: UpstreamError, attempts: list[Attempt], target: Target) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempts = attempts
        self.target = target


@dataclass(slots=True)
class Completion:
    response: Response
    target: Target
    attempts: list[Attempt]
    tries: int


class Stream:
    """A stream committed to one target: the deltas already buffered, then the rest."""

    def __init__(
        self,
        target: Target,
        attempts: list[Attempt],
        tries: int,
        source: AsyncIterator[Delta],
        buffered: list[Delta],
        finish: Callable[[bool, UpstreamError | None, Usage | None], None],
        deadline: float,
    ) -> None:
        self.target = target
        self.attempts = attempts
        self.tries = tries
        self._source = source
        self._buffered = buffered
        self._finish = finish
        self._deadline = deadline

    async def deltas(self) -> AsyncIterator[Delta]:
        """Every delta of the answer. A failure after content was sent raises UpstreamError;
        the caller tells the client explicitly, never a silent truncation."""
        usage: Usage | None = None
        error: UpstreamError | None = None
        try:
            for delta in self._buffered:
                usage = delta.usage or usage
                yield delta
            async with asyncio.timeout_at(self._deadline):
                async for delta in self._source:
                    usage = delta.usage or usage
                    yield delta
        except TimeoutError:
            error = timeout_error("total")
            raise error from None
        except UpstreamError as exc:
            error = exc
            raise
        finally:
            await _close(self._source)
            # a client that goes away is not the model's failure
            self._finish(error is None, error, usage)


async def _close(source: AsyncIterator[Delta]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        # closing a broken stream may raise again; there is nothing left to do with it
        with contextlib.suppress(Exception):
            await aclose()


def _skip_reason(target: Target, too_long_for: int | None) -> str | None:
    reason = target.provider.unavailable_reason()
    if reason:
        return f"misconfigured({reason})"
    if too_long_for is not None:
        window = target.model.context_window
        if window is not None and window <= too_long_for:
            return "context_length(skipped)"
    return None


class Executor:
    def __init__(self, record: Callable[[Outcome], None]) -> None:
        self._record = record

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
    ) -> None:
        self._record(
            Outcome(
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
            )
        )

    async def complete(self, plan: Plan, request: Request) -> Completion:
        async def once(target: Target, attempts: list[Attempt], tries: int):
            call = Call(target.upstream_model, target.timeouts)
            started, t0 = time.time(), time.perf_counter()
            try:
                async with asyncio.timeout(target.timeouts.total):
                    response = await target.provider.complete(request, call)
            except TimeoutError:
                error = timeout_error("total")
            except UpstreamError as exc:
                error = exc
            else:
                elapsed = time.perf_counter() - t0
                self._outcome(plan, target, started, elapsed, None, None, response.usage, call)
                return Completion(response, target, attempts, tries)
            self._outcome(plan, target, started, time.perf_counter() - t0, error, call=call)
            return error

        return await self._failover(plan, once)

    async def stream(self, plan: Plan, request: Request) -> Stream:
        async def once(target: Target, attempts: list[Attempt], tries: int):
            return await self._open(plan, target, request, attempts, tries)

        return await self._failover(plan, once)

    async def _failover(
        self, plan: Plan, once: Callable[[Target, list[Attempt], int], Awaitable[T | UpstreamError]]
    ) -> T:
        """Try each target in order, retrying transient failures on the same target."""
        attempts: list[Attempt] = []
        errors: list[UpstreamError] = []
        too_long_for: int | None = None
        tries = 0
        for target in plan.targets:
            skip = _skip_reason(target, too_long_for)
            if skip:
                attempts.append(Attempt(target.name, skip))
                continue
            for attempt in range(plan.retry.attempts):
                tries += 1
                result = await once(target, attempts, tries)
                if not isinstance(result, UpstreamError):
                    return result
                error = result
                if error.error_class is ErrorClass.CLIENT_ERROR:
                    raise PassThroughError(error, attempts, target)
                if not should_retry_same_target(error, attempt, plan.retry):
                    break
                await asyncio.sleep(backoff_delay(error, attempt, plan.retry))
            errors.append(error)
            attempts.append(Attempt(target.name, error.reason))
            if error.error_class is ErrorClass.CONTEXT_LENGTH:
                # later targets no larger than this one would fail the same way
                too_long_for = max(too_long_for or 0, target.model.context_window or 0) or None
        raise AllTargetsFailed(plan, attempts, errors)

    async def _open(
        self, plan: Plan, target: Target, request: Request, attempts: list[Attempt], tries: int
    ) -> Stream | UpstreamError:
        """Start a stream and wait for its first content token within the TTFT timeout."""
        call = Call(target.upstream_model, target.timeouts)
        started, t0 = time.time(), time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + target.timeouts.total
        ttft_deadline = min(deadline, loop.time() + target.timeouts.ttft)
        source = target.provider.stream(request, call)
        buffered: list[Delta] = []
        try:
            async with asyncio.timeout_at(ttft_deadline):
                async for delta in source:
                    buffered.append(delta)
                    if delta.has_content or delta.finish_reason:
                        break
                else:
                    if not buffered:
                        raise UpstreamError(ErrorClass.STREAM_BROKEN, "stream ended empty")
        except TimeoutError:
            error = timeout_error("ttft" if ttft_deadline < deadline else "total")
        except UpstreamError as exc:
            error = exc
        else:
            ttft = time.perf_counter() - t0

            def finish(ok: bool, err: UpstreamError | None, usage: Usage | None) -> None:
                elapsed = time.perf_counter() - t0
                self._outcome(plan, target, started, elapsed, err, ttft, usage, call)

            return Stream(target, attempts, tries, source, buffered, finish, deadline)
        await _close(source)
        self._outcome(plan, target, started, time.perf_counter() - t0, error, call=call)
        return error
