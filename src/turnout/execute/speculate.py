"""The first attempt of a long prompt, started while its token count still runs.

Routing hands over a count it did not wait for (routing/pending_count.py) when the bounds
left a target's window undecided. The upstream's prefill of a prompt that long takes far
longer than the count, so the two run together, and the first to end decides:

- the attempt (a stream's first token, or a whole answer): the upstream took the prompt; it
  is committed as usual, and the count ends in the background when it is already counting
  (its cache entry is kept), or is dropped when it still queues behind other counts;
- the count, saying the prompt fits with the max_tokens asked: nothing changes;
- the count, saying the prompt cannot fit the target's window: the attempt is cancelled (its
  connection closed, nothing told to health: it says nothing about the model) and listed as
  the selector would have skipped it, `context_length(N+out>W)`;
- the count, saying the prompt fits only with fewer max_tokens (a clamping route): cancelled
  and asked again for what the window leaves, as a count-first request would have been.

An upstream's own "context length exceeded" waits for the count: when the count agrees, the
target is listed as skipped, as above. When the count rules out every target of the route,
the client gets the selector's 400 (context_length_exceeded), as it would have counting first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from turnout.execute.attempt import UpstreamAttempt
from turnout.execute.hedge import Runner
from turnout.model import Attempt, ErrorClass, UpstreamError
from turnout.routing import Plan, Target
from turnout.routing.pending_count import PendingCount
from turnout.routing.selector import nothing_can


@dataclass(frozen=True, slots=True)
class CountSkip:
    """The count ruled the attempt's target out after the attempt had started."""

    reason: str


async def speculate(
    plan: Plan,
    target: Target,
    pending: PendingCount,
    attempts: list[Attempt],
    make: Callable[[], UpstreamAttempt],
    run: Callable[[UpstreamAttempt], Awaitable[Any]],
) -> Any:
    """`run` on a new attempt at `target` while `pending` counts: its result (an answer, a
    stream or an UpstreamError), or a CountSkip. `make` builds an attempt (again, clamped,
    once the count is known)."""
    runner = Runner.start(target, make(), run)
    try:
        await asyncio.wait((runner.task, pending.task), return_when=asyncio.FIRST_COMPLETED)
        if runner.task.done():  # (first, or at the same moment: the upstream took the prompt)
            result = runner.task.result()
            if (
                isinstance(result, UpstreamError)
                and result.error_class is ErrorClass.CONTEXT_LENGTH
            ):
                await settle(plan, pending, attempts)
                reason = pending.skip_reason(target)
                if reason is not None:
                    return CountSkip(reason)
            elif not isinstance(result, UpstreamError):
                pending.release()  # nobody waits for the count now
            return result
        await settle(plan, pending, attempts)
        reason = pending.skip_reason(target)
        if reason is None and not pending.clamps(target):
            return await runner.task  # it fits as asked: the attempt goes on
    except BaseException:  # the request was cancelled (its client left), or nothing fits
        await runner.abandon()
        pending.release()
        raise
    # the count ended before the upstream's first token: it had not taken the prompt yet
    await runner.abandon()
    if reason is not None:
        return CountSkip(reason)
    return await run(make())  # the request now knows its count: the attempt is clamped


async def settle(plan: Plan, pending: PendingCount, attempts: list[Attempt]) -> None:
    """Wait for the count; when it rules out every target of `plan`, the selector's 400.
    `attempts`: the request's so far (those of targets not in the plan are the selector's)."""
    await pending.settle()
    reasons = [(t, pending.skip_reason(t)) for t in plan.targets]
    if all(reason is not None for _, reason in reasons):
        keys = {t.key for t in plan.targets}
        skipped = [a for a in attempts if a.model not in keys]
        skipped += [Attempt(t.key, reason) for t, reason in reasons if reason is not None]
        raise nothing_can(plan, skipped)
