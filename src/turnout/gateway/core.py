"""The gateway core: one call, `handle(request, exchange)`, admits, selects, executes and
records a request, and returns an Answer the server only has to encode.

It holds the runtime snapshot (everything derived from the config, gateway/runtime.py) and
the long-lived services that outlive any config: health, the scheduler, the selector's
session memory, accounting (ledger, spend, key limits, captures), the key table and the
event bus they meet on."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

from turnout.accounting.auth import ANONYMOUS, Authenticator, Identity
from turnout.accounting.records import LedgerRow
from turnout.accounting.service import Accounting
from turnout.config.schema import Config
from turnout.events import AttemptFinished, BudgetAlert, EventBus, RequestFinished
from turnout.events.plugins import subscribe_plugins
from turnout.execute import (
    AllTargetsFailed,
    PassThroughError,
    Relay,
    RelayEnd,
    Scheduler,
    Stream,
)
from turnout.gateway.admission import Refused, admit, plan_for
from turnout.gateway.answer import Answer, turnout_headers
from turnout.gateway.exchange import Client, Exchange
from turnout.gateway.runtime import Runtime
from turnout.health import HealthEngine
from turnout.health.state import make_store
from turnout.model import Attempt, Request, Response, Usage
from turnout.model.tokens import estimate_prompt_tokens
from turnout.providers.base import Provider
from turnout.routing import Plan, Planner, Target
from turnout.routing.selector import Selector

log = logging.getLogger("turnout")


class Gateway:
    def __init__(self, config: Config) -> None:
        self.runtime = Runtime.build(config)
        store = make_store(config.state.backend, config.state.url, config.state.prefix)
        self.bus = EventBus()
        self.health = HealthEngine(config.health, store, self.bus.publish)
        self.scheduler = Scheduler(self.health, self.bus.publish)
        self.selector = Selector(self.health)
        for name, model in config.models.items():
            self.health.register(name, model.provider)
        self.accounting = Accounting(config, self.bus.publish)
        # inline: each must see its events in order, and each is O(1) and never waits
        self.bus.subscribe(
            self.health.on_attempt, kinds=(AttemptFinished,), inline=True, name="health"
        )
        self.bus.subscribe(
            self.accounting.on_request, kinds=(RequestFinished,), inline=True, name="ledger"
        )
        self.bus.subscribe(
            self.accounting.alerts.on_alert, kinds=(BudgetAlert,), inline=True, name="alerts"
        )
        subscribe_plugins(self.bus)  # subscribers registered by TURNOUT_PLUGINS modules
        self.auth = Authenticator(self.accounting.store)
        self._probes: asyncio.Task[None] | None = None
        self._probing: set[str] = set()

    # --- the runtime's parts, for the admin endpoints and the CLI -----------------------------

    @property
    def config(self) -> Config:
        return self.runtime.config

    @property
    def planner(self) -> Planner:
        return self.runtime.planner

    @property
    def providers(self) -> dict[str, Provider]:
        return dict(self.runtime.providers)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.start()
        await self.accounting.start()
        await self.auth.start(self.runtime.auth)
        for name, provider in self.runtime.providers.items():
            reason = provider.unavailable_reason()
            if reason:
                self.health.mark_unusable(name, reason)
                continue
            await provider.start()
        await self.health.start()
        self._probes = asyncio.create_task(self._probe_loop(), name="health-probes")

    async def close(self) -> None:
        if self._probes is not None:
            self._probes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probes
        await self.auth.close()
        await self.health.close()
        for provider in self.runtime.providers.values():
            await provider.close()
        await self.bus.close()  # queued subscribers get what was published before closing
        await self.accounting.close()  # last: drains every ledger row still queued

    # --- one request ------------------------------------------------------------------------

    def arrive(self, dialect: str, client: Client) -> Exchange:
        """A request arrived: it gets its id, its clock and the current runtime."""
        return Exchange(dialect, self.runtime, client, self.bus.publish)

    async def identify(self, exchange: Exchange, headers: Any, address: str | None) -> Identity:
        identity = await self.auth.identify(headers, exchange.runtime.auth, address)
        exchange.identified(identity)  # or AuthError
        return identity

    async def handle(self, request: Request, exchange: Exchange) -> Answer:
        """Admit, select, execute and record: the answer, or a GatewayError to refuse with
        (the server passes it to `exchange.refuse`)."""
        runtime, row = exchange.runtime, exchange.row
        row.route, row.stream, row.session = request.model, request.stream, request.session
        plan = plan_for(runtime, request)
        admit(runtime, self.accounting, exchange.identity or ANONYMOUS, plan, request)
        selection = await self.selector.select(plan, request)  # or NoCapableTarget
        plan, skipped = selection.plan, selection.skipped
        capture = self.accounting.capture
        capturing = capture is not None and capture.wants(plan.route)
        if not capturing:
            request.answer_format = row.dialect  # only the client reads the answer
        try:
            if request.stream:
                stream = await self.scheduler.stream(plan, request, skipped)
                return self._streaming(exchange, plan, request, stream, capturing)
            completion = await self.scheduler.complete(plan, request, skipped)
        except AllTargetsFailed as exc:
            row.attempts = _reasons(exc.attempts)
            raise _all_failed(exc) from None
        except PassThroughError as exc:
            row.attempts = _reasons(exc.attempts)
            row.model, row.provider = exc.target.name, exc.target.provider.name
            raise _passed_through(exc, plan.route) from None
        target, response = completion.target, completion.response
        self._priced(row, plan, target, completion.attempts, response.usage)
        row.status, row.outcome = 200, "stale" if completion.stale_age is not None else "ok"
        self.selector.remember(plan, request, target.name)
        self._capture(row, plan, request, response)
        response.usage.cost = row.cost_usd
        exchange.finish()
        return _answer(
            row,
            plan,
            target,
            request,
            completion.tries,
            completion.attempts,
            response=response,
            stale_age=completion.stale_age,
            validated=completion.validated,
            cost_usd=row.cost_usd,
            saved_usd=row.saved_usd if plan.baseline is not None else None,
        )

    def _streaming(
        self, exchange: Exchange, plan: Plan, request: Request, stream: Stream, capturing: bool
    ) -> Answer:
        """The committed stream as an answer; its relay finishes the exchange at its end."""
        row, target = exchange.row, stream.target
        self.selector.remember(plan, request, target.name)

        def settle(usage: Usage) -> None:
            self._priced(row, plan, target, stream.attempts, usage)
            usage.cost = row.cost_usd  # the closing events carry the cost

        def on_end(end: RelayEnd) -> None:
            row.status, row.outcome, row.error = 200, end.outcome, end.error
            if end.first_token_at is not None:
                # the client's wait: from its request's arrival to the first token the
                # scheduler received (failed attempts before it included)
                row.ttft_ms = (end.first_token_at - row.started_at) * 1000
            usage = end.usage
            if usage is None:
                # the stream ended early: the upstream never reported usage, so count it
                usage = Usage(estimate_prompt_tokens(request), end.pieces)
                row.usage_estimated = True
            self._priced(row, plan, target, stream.attempts, usage)
            if end.kept is not None:
                self._capture(row, plan, request, end.kept.response(row.id, target.name))
            exchange.finish(client_left_first=not end.opened)

        relay = Relay(stream, self.scheduler.continuation, settle, on_end, keep=capturing)
        first = stream.first_token_at
        return _answer(
            row,
            plan,
            target,
            request,
            stream.tries,
            stream.attempts,
            relay=relay,
            stale_age=stream.stale_age,
            ttft_ms=(first - row.started_at) * 1000 if first is not None else None,
        )

    # --- accounting an answer ---------------------------------------------------------------

    def _priced(
        self, row: LedgerRow, plan: Plan, target: Target, attempts: list[Attempt], usage: Usage
    ) -> None:
        row.model, row.provider = target.name, target.provider.name
        row.attempts = _reasons(attempts)
        self.accounting.price(row, target.price, usage, plan.baseline)

    def _capture(self, row: LedgerRow, plan: Plan, request: Request, response: Response) -> None:
        capture = self.accounting.capture
        if capture is not None and row.model and capture.wants(plan.route):
            capture.record(row.id, plan.route, row.model, request, response)

    # --- health probes ------------------------------------------------------------------------

    async def _probe_loop(self) -> None:
        """Half-open models with no traffic, and rejected keys, get a synthetic tiny request."""
        while True:
            await asyncio.sleep(self.config.health.probe_interval)
            now = time.time()
            for model in self.health.due_probes(now):
                plan = self.runtime.plan(model)
                if plan is None or model in self._probing:
                    continue
                target = plan.targets[0]
                if target.provider.unavailable_reason():
                    continue
                if self.health.skip_reason(model, now) is not None:
                    continue  # (this call also claims the half-open probe slot)
                self._probing.add(model)
                task = asyncio.create_task(self.scheduler.probe(plan, target))
                task.add_done_callback(functools.partial(self._probe_done, model))

    def _probe_done(self, model: str, _: asyncio.Task[Any]) -> None:
        self._probing.discard(model)

    def route_health(self) -> dict[str, Any]:
        """Per route: the active primary and each target's state, for /health/providers."""
        snapshot = self.health.snapshot()
        routes = {}
        for name, route in self.config.routes.items():
            targets = [{"model": t, **snapshot["models"][t]} for t in route.targets]
            active = next((t["model"] for t in targets if t["state"] == "healthy"), None)
            routes[name] = {"active": active, "targets": targets}
        return {"routes": routes, **snapshot}


def _answer(
    row: LedgerRow,
    plan: Plan,
    target: Target,
    request: Request,
    tries: int,
    attempts: list[Attempt],
    **fields: Any,
) -> Answer:
    """The answer of `target`, saying so when it was asked for fewer tokens than the client
    wanted (its output limit, or its window less the prompt)."""
    answer = Answer(row.id, plan.route, target.name, tries, attempts, **fields)
    limit = target.output_limit(request)
    if limit is not None:
        answer.extra_headers["x-turnout-max-tokens"] = f"{limit} (asked {request.max_tokens})"
    return answer


def _reasons(attempts: list[Attempt]) -> list[dict[str, str]]:
    return [{"model": a.model, "reason": a.reason} for a in attempts]


def _all_failed(exc: AllTargetsFailed) -> Refused:
    headers = turnout_headers(exc.plan.route, None, exc.tries, exc.attempts)
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after)))
    return Refused(
        503,
        str(exc),
        code="all_targets_unavailable",
        error_type="service_unavailable",
        headers=headers,
    )


def _passed_through(exc: PassThroughError, route: str) -> Refused:
    error = exc.error
    return Refused(
        error.status or 400,
        error.message,
        code=error.code,
        param=error.param,
        error_type=error.error_type,
        headers=turnout_headers(route, exc.target.name, exc.tries, exc.attempts),
    )
