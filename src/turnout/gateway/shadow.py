"""Sending a shadow copy: after the route has answered a client, its rollout's candidate
gets the same request in the background (rollouts/shadow.py says which requests and
compares the pairs). The copy is a real, paid call, so it is ledgered, as route
`<route>:shadow` with dialect `shadow` and no key: the client's key and the route's budgets
are never charged for it; the provider's budget is (the provider is paid for it)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from turnout import clock
from turnout.accounting.records import LedgerRow
from turnout.accounting.service import Accounting
from turnout.config.schema import RetryConfig
from turnout.events import Publish, RequestFinished
from turnout.execute import AllTargetsFailed, PassThroughError, Scheduler
from turnout.gateway.exchange import next_request_id
from turnout.gateway.runtime import Runtime
from turnout.model import Request, Usage
from turnout.rollouts import Rollouts
from turnout.rollouts.shadow import Pair
from turnout.routing import Plan

log = logging.getLogger("turnout.rollouts")

_ONCE = RetryConfig(attempts=1)
# copies waiting on slow candidates must not pile up and take the process from its clients:
# beyond this many in flight, a copy is not sent (and counted as `busy`)
MAX_IN_FLIGHT = 16


class ShadowCopies:
    def __init__(
        self, scheduler: Scheduler, accounting: Accounting, rollouts: Rollouts, publish: Publish
    ) -> None:
        self.scheduler = scheduler
        self.accounting = accounting
        self.rollouts = rollouts
        self.publish = publish
        self._running: set[asyncio.Task[None]] = set()

    def after_answer(
        self,
        runtime: Runtime,
        plan: Plan,
        request: Request,
        text: str | None,
        latency: float,
        cost: float,
    ) -> None:
        """The client has its answer (`text`, after `latency` seconds, for `cost`): copy the
        request to the route's shadow candidate. Never waits, never raises."""
        candidate = plan.candidate
        if candidate is None:
            return
        if len(self._running) >= MAX_IN_FLIGHT:
            self.rollouts.shadow_busy(plan.route)  # copies pile up: the clients come first
            return
        # the copy asks for a whole answer, once, of the candidate alone
        shadow_plan = dataclasses.replace(
            plan, targets=(candidate,), retry=_ONCE, stale_max_age=None, queue_max_wait=None
        )
        copy = dataclasses.replace(request, stream=False, answer_format=None)
        task = asyncio.get_running_loop().create_task(
            self._copy(shadow_plan, copy, text, latency, cost), name="shadow-copy"
        )
        self._running.add(task)
        runtime.users.enter()  # a reload must not close the candidate's provider under it

        def done(finished: asyncio.Task[None]) -> None:
            self._running.discard(finished)
            runtime.users.leave()

        task.add_done_callback(done)

    async def _copy(
        self, plan: Plan, request: Request, text: str | None, latency: float, cost: float
    ) -> None:
        assert plan.candidate is not None
        candidate = plan.candidate
        row = LedgerRow(
            id=next_request_id(),
            started_at=clock.now(),
            route=f"{plan.route}:shadow",
            dialect="shadow",
            stream=False,
            status=500,
            outcome="error",
            model=candidate.name,
            provider=candidate.provider.name,
        )
        pair = Pair(
            request.wants_json or plan.output_schema is not None,
            text,
            latency,
            cost,
            None,
            0.0,
            0.0,
        )
        started = time.perf_counter()
        usage = Usage()
        try:
            completion = await self.scheduler.complete(plan, request)
            pair.candidate_text = completion.response.content or ""
            usage = completion.response.usage
            row.status, row.outcome = 200, "ok"
        except (AllTargetsFailed, PassThroughError) as exc:
            reason = exc.attempts[-1].reason if exc.attempts else str(exc)
            row.attempts = [{"model": a.model, "reason": a.reason} for a in exc.attempts]
            pair.candidate_failure, pair.invalid = reason, reason.startswith("invalid_output")
            row.error = reason
        except Exception:  # a bug of ours: logged; a shadow's failure reaches no client
            log.exception("shadow copy to %s failed", candidate.name)
            row.error = "internal error"
        pair.candidate_latency = row_latency = time.perf_counter() - started
        row.latency_ms = row_latency * 1000
        self.accounting.price(row, candidate.price, usage, None)
        pair.candidate_cost = row.cost_usd
        self.rollouts.shadowed(plan.route, pair)
        self.publish(RequestFinished(row))

    async def close(self) -> None:
        """Let the copies in flight finish (they are paid for), then stop."""
        if self._running:
            await asyncio.wait(self._running, timeout=5)
