"""The gateway core: one call, `handle(request, exchange)`, admits, selects, executes and
records a request, and returns an Answer the server only has to encode.

It holds the runtime snapshot (everything derived from the config, gateway/runtime.py) and
the long-lived services that outlive any config: health, the scheduler, the selector's
session memory, accounting (ledger, spend, key limits, captures), the key table and the
event bus they meet on."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import time
from typing import Any

from turnout import clock
from turnout.accounting.auth import ANONYMOUS, Authenticator, AuthError, Identity
from turnout.accounting.records import LedgerRow
from turnout.accounting.service import Accounting, data_dir
from turnout.cache import Lookup, ResponseCache, directives
from turnout.config.schema import Config
from turnout.events import (
    AttemptFinished,
    BudgetAlert,
    ConfigReloaded,
    EventBus,
    RequestFinished,
    SharedStateChanged,
)
from turnout.events.plugins import subscribe_plugins
from turnout.execute import (
    AllTargetsFailed,
    PassThroughError,
    Relay,
    RelayEnd,
    Scheduler,
    Stream,
)
from turnout.execute.embed import Embedder, estimate_tokens
from turnout.execute.hedge import FleetHedges, HedgeBuckets
from turnout.gateway.admission import Refused, admit, admit_request, pace, plan_for
from turnout.gateway.answer import Answer, turnout_headers
from turnout.gateway.cache_embed import embed_for_cache
from turnout.gateway.cached import cache_headers, serve_hit
from turnout.gateway.embeddings import (
    EmbeddingAnswer,
    admit_embeddings,
    as_request,
    embeddings_plan,
    order,
    refuse_chat,
    remember,
)
from turnout.gateway.exchange import Client, Exchange
from turnout.gateway.reload import ConfigSource, restart_needed
from turnout.gateway.runtime import Runtime
from turnout.gateway.shadow import ShadowCopies
from turnout.health import HealthEngine
from turnout.health.pacing import Pacer
from turnout.health.state import make_store
from turnout.model import Attempt, Request, Response, Usage
from turnout.model.embeddings import EmbeddingRequest
from turnout.model.tokens import estimate_prompt_tokens
from turnout.providers.base import Provider
from turnout.rollouts import FileStore, Rollouts
from turnout.routing import Plan, Planner, Target
from turnout.routing.capabilities import serves_embeddings
from turnout.routing.prompt_size import warm_up as warm_up_tokenizer
from turnout.routing.selector import Selector
from turnout.routing.sessions import SharedSessions
from turnout.sinks import attach_sinks

log = logging.getLogger("turnout")


class Gateway:
    def __init__(self, config: Config, source: ConfigSource | None = None) -> None:
        """`source`: where `reload()` reads the config again (default: this config as it is)."""
        self.runtime = Runtime.build(config)
        self.source = source or ConfigSource("<config>", lambda: config)
        store = make_store(config.state.backend, config.state.url, config.state.prefix)
        self.bus = EventBus()
        self.health = HealthEngine(config.health, store, self.bus.publish)
        # with Redis, a route's hedge cap holds for the fleet, not per process (issue 17)
        fleet_hedges = (
            FleetHedges(config.state.url, config.state.prefix, self.bus.publish)
            if config.state.backend == "redis"
            else None
        )
        self.scheduler = Scheduler(self.health, self.bus.publish, HedgeBuckets(fleet_hedges))
        self.embedder = Embedder(self.health, self.bus.publish)  # POST /v1/embeddings' attempts
        self.selector = Selector(self.health)
        for name, model in config.models.items():
            self.health.register_model(name, model)
        self.accounting = Accounting(config, self.bus.publish)
        # with Redis: sessions and rate-limit headroom shared by every process (issue 17)
        shared = config.state.url if config.state.backend == "redis" else None
        self.sessions = SharedSessions(shared, config.state.prefix) if shared else None
        self.pacer = Pacer(shared, config.state.prefix)
        self.bus.subscribe(
            self.pacer.on_attempt, kinds=(AttemptFinished,), inline=True, name="pacing"
        )
        # inline: each must see its events in order, and each is O(1) and never waits
        self.bus.subscribe(
            self.health.on_attempt, kinds=(AttemptFinished,), inline=True, name="health"
        )
        self.bus.subscribe(
            self.accounting.on_request, kinds=(RequestFinished,), inline=True, name="ledger"
        )
        self.bus.subscribe(
            self.accounting.alerts.on_alert,
            kinds=(BudgetAlert, SharedStateChanged),
            inline=True,
            name="alerts",
        )
        # rollouts: a route's candidate on its share of requests, judged on every attempt
        state = config.state
        fleet = (  # with Redis, every process of the fleet shares each rollout
            make_store("redis", state.url, state.prefix, "rollouts")
            if state.backend == "redis"
            else None
        )
        files = FileStore(data_dir(config) / "rollouts.json")
        self.rollouts = Rollouts(files, self.bus.publish, fleet)
        self.shadows = ShadowCopies(
            self.scheduler, self.accounting, self.rollouts, self.bus.publish
        )
        self.bus.subscribe(
            self.rollouts.on_attempt, kinds=(AttemptFinished,), inline=True, name="rollouts"
        )
        subscribe_plugins(self.bus)  # subscribers registered by TURNOUT_PLUGINS modules
        # events out (config `sinks:`): each sink a queued subscriber, built once at start-up
        self.sinks = attach_sinks(config, self.bus, lambda: self.runtime.redactor)
        self.auth = Authenticator(self.accounting.store)
        self.cache = ResponseCache(config.state)  # routes' `cache:` (shared with Redis state)
        self.cache.configure(config)
        # semantic mode: the prompt's vector from this gateway's own embeddings route
        self.cache.embed = functools.partial(embed_for_cache, self.arrive, self.embed)
        self._probes: asyncio.Task[None] | None = None
        self._probing: set[str] = set()
        self._reloading = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()  # closing a replaced runtime's providers
        self.loaded_at = time.time()  # when the runtime now serving was installed

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
        # (here, not at construction: every subscriber, the server's too, hears "started")
        self.rollouts.configure(self.config)
        await self.rollouts.start()
        await self.pacer.start()
        await self.cache.start()
        if any(m.context_window for m in self.config.models.values()):
            warm_up_tokenizer()  # the context-window filter will count: load it now
        self._probes = asyncio.create_task(self._probe_loop(), name="health-probes")

    async def close(self) -> None:
        if self._probes is not None:
            self._probes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probes
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.shadows.close()  # copies in flight are paid for: let them finish
        await self.rollouts.close()  # the counters since the last decision
        await self.auth.close()
        await self.health.close()
        await self.pacer.close()
        await self.scheduler.hedge_buckets.close()
        if self.sessions is not None:
            await self.sessions.close()
        for provider in self.runtime.providers.values():
            await provider.close()
        await self.cache.close()  # its answers still being stored
        await self.bus.close()  # queued subscribers get what was published before closing
        await self.sinks.close()  # the sinks' connections, once their queues drained
        await self.accounting.close()  # last: drains every ledger row still queued

    # --- reload -------------------------------------------------------------------------------

    async def reload(self) -> ConfigReloaded:
        """Read the config again from its source and install it: a new runtime is built and
        started beside the running one, then swapped in at once. A config that does not
        load (invalid YAML, a bad key path) is reported and the old one keeps serving. Requests in flight finish on the runtime they
        started with; its providers that the new runtime does not keep are closed after the
        last of them. Health, latency, sessions, spend and the ledger carry over. A runtime
        that cannot be built (a provider that fails to start) leaves the old one serving."""
        async with self._reloading:  # one reload at a time (a SIGHUP during an admin reload)
            old, source = self.runtime, self.source.name
            try:
                config = self.source.load()
                new = Runtime.build(config, previous=old)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old config serving
                return self._reloaded(old, old, source, f"{type(exc).__name__}: {exc}")
            if new.version == old.version:
                return self._reloaded(old, old, source, None)
            started = []
            try:
                for provider in new.new_providers(old):
                    self.health.provider_replaced(provider.name)
                    reason = provider.unavailable_reason()
                    if reason:
                        self.health.mark_unusable(provider.name, reason)
                        continue
                    await provider.start()
                    started.append(provider)
            except Exception as exc:  # noqa: BLE001 - a provider that cannot start: keep the old
                for provider in started:
                    await provider.close()
                return self._reloaded(old, old, source, f"{type(exc).__name__}: {exc}")
            for name, model in config.models.items():
                self.health.register_model(name, model)
            self.accounting.spend.use(new.budgets)
            self.rollouts.configure(config)
            self.cache.configure(config)
            self.runtime, self.loaded_at = new, time.time()
            kept = {id(p) for p in new.providers.values()}
            retired = [p for p in old.providers.values() if id(p) not in kept]
            old.users.when_idle(lambda: self._retire(retired))
            return self._reloaded(new, old, source, None, restart_needed(old.config, config))

    def _retire(self, providers: list[Provider]) -> None:
        """Close a replaced runtime's own providers (its last request has finished)."""

        async def close_all() -> None:
            for provider in providers:
                await provider.close()

        task = asyncio.get_running_loop().create_task(close_all(), name="retire-providers")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _reloaded(
        self,
        serving: Runtime,
        before: Runtime,
        source: str,
        error: str | None,
        waiting: tuple[str, ...] = (),
    ) -> ConfigReloaded:
        event = ConfigReloaded(
            ok=error is None,
            version=serving.version,
            previous=before.version,
            source=source,
            error=before.redactor(error) if error else None,
            restart_needed=waiting,
            at=clock.now(),
        )
        if error:
            log.error(
                "config reload from %s failed, still serving %s: %s",
                source,
                serving.version,
                event.error,
            )
        elif serving is before:
            log.info("config reload from %s: unchanged (version %s)", source, serving.version)
        else:
            log.info(
                "config reloaded from %s: version %s (was %s)",
                source,
                serving.version,
                before.version,
            )
        if waiting:
            log.warning(
                "config reload: %s changed but only take effect on a restart", ", ".join(waiting)
            )
        self.bus.publish(event)
        return event

    # --- one request ------------------------------------------------------------------------

    def arrive(self, dialect: str, client: Client) -> Exchange:
        """A request arrived: it gets its id, its clock and the current runtime."""
        return Exchange(dialect, self.runtime, client, self.bus.publish)

    async def identify(self, exchange: Exchange, headers: Any, address: str | None) -> Identity:
        identity = await self.auth.identify(headers, exchange.runtime.auth, address)
        exchange.identified(identity)  # or AuthError
        return identity

    def identify_now(self, exchange: Exchange, headers: Any, address: str | None) -> bool:
        """`identify` without a coroutine when nothing is to be waited for (no key, a known
        one): True once identified (or AuthError); False: await `identify`."""
        identity = self.auth.identify_now(headers, exchange.runtime.auth, address)
        if identity is None:
            return False
        exchange.identified(identity)
        return True

    async def operator(
        self, headers: Any, address: str | None, what: str = "This endpoint"
    ) -> Identity:
        """The caller of an operator's endpoint (/admin/*, /health/providers, /metrics,
        /dashboard): with auth on, an admin key. Raises AuthError: 401 or 429 as for any
        request, 403 for a key that is not an admin's."""
        rules = self.runtime.auth
        identity = await self.auth.identify(headers, rules, address)
        if rules.required and not identity.admin:
            raise AuthError(403, f"{what} needs an admin key.", "admin_key_required")
        return identity

    async def handle(
        self, request: Request, exchange: Exchange, cache_control: str | None = None
    ) -> Answer:
        """Admit, select, execute and record: the answer, or a GatewayError to refuse with
        (the server passes it to `exchange.refuse`). `cache_control`: the client's header
        (no-cache, no-store), for a route with a response cache."""
        runtime, row = exchange.runtime, exchange.row
        row.route, row.stream, row.session = request.model, request.stream, request.session
        request.request_id = row.id  # its attempts' outcomes name it
        plan = plan_for(runtime, request)
        if serves_embeddings(plan):
            raise refuse_chat(plan)  # an embeddings model would answer chat with an error
        identity = exchange.identity or ANONYMOUS
        if self.accounting.counts_shared(identity.key, plan.route, runtime.budgets):
            await admit_request(runtime, self.accounting, identity, plan, request, row.id)
        else:  # this process counts (no Redis, or no limit or budget applies): no coroutine
            admit(runtime, self.accounting, identity, plan, request)
        lookup: Lookup | None = None
        rule = self.cache.rules.get(plan.route)  # None, one dict lookup: the route caches nothing
        if rule is not None:
            lookup = await self.cache.lookup(
                rule, plan, request, row.key_id, row.dialect, directives(cache_control)
            )
            row.cache = lookup.verdict
            if lookup.entry is not None:
                return serve_hit(exchange, request, lookup)  # a hit: no selection, no upstream
        if self.sessions is not None and plan.consistency is not None:
            await self.sessions.recall(plan.consistency, request)  # the fleet's session map
        if plan.context_windows:  # the prompt may have to be counted: select() may wait
            selection = await self.selector.select(plan, request)  # or NoCapableTarget
        else:
            selection = self.selector.select_now(plan, request)
        skipped = selection.skipped
        plan = self.rollouts.route(selection.plan, request, row.key_id)  # a canary's share
        if self.pacer.paced:  # a model told of its rate limit: spread requests over it
            plan = await pace(self.pacer, plan, skipped)
        capture = self.accounting.capture
        capturing = capture is not None and capture.wants(plan.route)
        # a rollout's shadow candidate gets a copy of this request once it is answered
        shadowing = self.rollouts.shadow_wanted(plan.route, request, row.key_id)
        storing = lookup is not None and lookup.stores  # the cache keeps the decoded answer
        if not capturing and not shadowing and not storing:
            request.answer_format = row.dialect  # only the client reads the answer
        try:
            if request.stream:
                stream = await self.scheduler.stream(plan, request, skipped, selection.pending)
                return self._streaming(
                    exchange, plan, request, stream, capturing, shadowing, lookup
                )
            completion = await self.scheduler.complete(plan, request, skipped, selection.pending)
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
        if completion.validated and (response.content or not response.tool_calls):
            row.output_check = "ok"  # the guard checked it (a tool call as the answer: not)
        self.selector.remember(plan, request, target.name)
        if self.sessions is not None and plan.consistency is not None:
            await self.sessions.remember(plan.consistency, request, target.name)
        self._capture(row, plan, request, response)
        response.usage.cost = row.cost_usd
        if storing and lookup is not None and row.outcome == "ok":
            self.cache.store(lookup, response, target.name, row.cost_usd)
        exchange.finish()
        if shadowing:
            self._shadow(exchange, plan, request, response.content)
        answer = _answer(
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
            config=exchange.runtime.version,
        )
        if lookup is not None:
            answer.extra_headers.update(cache_headers(lookup))
        return answer

    async def embed(self, request: EmbeddingRequest, exchange: Exchange) -> EmbeddingAnswer:
        """`handle` for embeddings: admitted (keys, limits, budgets), ordered by the route's
        policy, failed over and recorded as chat is; the attempts are execute/embed.py's."""
        runtime, row = exchange.runtime, exchange.row
        row.route, row.session = request.model, request.session
        request.request_id = row.id  # its attempts' outcomes name it
        plan = embeddings_plan(runtime, request)  # or a 404 naming the embeddings routes
        tokens = estimate_tokens(request)
        identity = exchange.identity or ANONYMOUS
        await admit_embeddings(runtime, self.accounting, identity, plan, request, row.id, tokens)
        sessions, consistency = self.sessions, plan.consistency
        if sessions is not None and consistency is not None:  # the fleet's map, as for chat
            await sessions.recall(consistency, as_request(request))
        plan, skipped = order(plan, request, self.health, tokens)
        try:
            embedded = await self.embedder.embed(plan, request, skipped, tokens)
        except AllTargetsFailed as exc:
            row.attempts = _reasons(exc.attempts)
            raise _all_failed(exc) from None
        except PassThroughError as exc:
            row.attempts = _reasons(exc.attempts)
            row.model, row.provider = exc.target.name, exc.target.provider.name
            raise _passed_through(exc, plan.route) from None
        target, usage = embedded.target, embedded.result.usage or Usage()
        self._priced(row, plan, target, embedded.attempts, usage)
        row.status, row.outcome, row.usage_estimated = 200, "ok", embedded.usage_estimated
        remember(plan, request, target.name)
        if sessions is not None and consistency is not None:
            await sessions.remember(consistency, as_request(request), target.name)
        exchange.finish()
        answer = Answer(
            row.id,
            plan.route,
            target.name,
            embedded.tries,
            embedded.attempts,
            cost_usd=row.cost_usd,
            saved_usd=row.saved_usd if plan.baseline is not None else None,
            config=runtime.version,
        )
        return EmbeddingAnswer(answer, embedded)

    def _streaming(
        self,
        exchange: Exchange,
        plan: Plan,
        request: Request,
        stream: Stream,
        capturing: bool,
        shadowing: bool,
        lookup: Lookup | None = None,
    ) -> Answer:
        """The committed stream as an answer; its relay finishes the exchange at its end."""
        row, target = exchange.row, stream.target
        self.selector.remember(plan, request, target.name)
        if self.sessions is not None and plan.consistency is not None:
            self.sessions.remember_soon(plan.consistency, request, target.name)

        def settle(usage: Usage) -> None:
            self._priced(row, plan, target, stream.attempts, usage)
            usage.cost = row.cost_usd  # the closing events carry the cost

        def on_end(end: RelayEnd) -> None:
            row.status, row.outcome, row.error = 200, end.outcome, end.error
            row.output_check = end.output_check
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
            for part in end.continued:  # models that continued a broken stream: theirs too
                part.record(row, plan.baseline)
            kept = end.kept.response(row.id, target.name) if end.kept is not None else None
            if kept is not None:
                self._capture(row, plan, request, kept)
            exchange.finish(client_left_first=not end.opened)
            if shadowing and kept is not None and end.outcome == "ok":
                self._shadow(exchange, plan, request, kept.content)
            good = end.outcome == "ok" and end.output_check in (None, "ok")  # not flagged JSON
            if lookup is not None and kept is not None and good:
                self.cache.store(lookup, kept, target.name, row.cost_usd)

        # the relay keeps the streamed answer for them (and for the response cache)
        keep = capturing or shadowing or (lookup is not None and lookup.stores)
        relay = Relay(stream, self.scheduler.continuation, settle, on_end, keep=keep)
        first = stream.first_token_at
        answer = _answer(
            row,
            plan,
            target,
            request,
            stream.tries,
            stream.attempts,
            relay=relay,
            stale_age=stream.stale_age,
            ttft_ms=(first - row.started_at) * 1000 if first is not None else None,
            config=exchange.runtime.version,
        )
        if lookup is not None:
            answer.extra_headers.update(cache_headers(lookup))
        return answer

    def _shadow(self, exchange: Exchange, plan: Plan, request: Request, text: str | None) -> None:
        row = exchange.row
        self.shadows.after_answer(
            exchange.runtime, plan, request, text, row.latency_ms / 1000, row.cost_usd
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
            # a real sleep: under simulated time (turnout.clock) probes keep their simulated pace
            await asyncio.sleep(self.config.health.probe_interval / clock.speed)
            now, runtime = clock.now(), self.runtime
            for model in self.health.due_probes(now):  # (health keys: a deployment's own)
                plan = runtime.plan(self.health.model_of(model))
                if plan is None or model in self._probing:
                    continue
                target = next((t for t in plan.targets if t.key == model), None)
                if target is None or target.provider.unavailable_reason():
                    continue
                if self.health.skip_reason(model, now) is not None:
                    continue  # (this call also claims the half-open probe slot)
                self._probing.add(model)
                runtime.users.enter()  # a reload must not close the provider under the probe
                probe = self.embedder.probe if serves_embeddings(plan) else self.scheduler.probe
                task = asyncio.create_task(probe(plan, target))
                task.add_done_callback(functools.partial(self._probe_done, model, runtime))

    def _probe_done(self, model: str, runtime: Runtime, _: asyncio.Task[Any]) -> None:
        self._probing.discard(model)
        runtime.users.leave()

    def route_health(self) -> dict[str, Any]:
        """Per route: the active primary and each target's state, for /health/providers."""
        snapshot = self.health.snapshot()
        routes = {}
        for name, route in self.config.routes.items():
            targets = [{"model": t, **snapshot["models"][t]} for t in route.targets]
            active = next((t["model"] for t in targets if t["state"] == "healthy"), None)
            routes[name] = {"active": active, "targets": targets}
        for state in self.rollouts.status():
            if state["route"] in routes:
                routes[state["route"]]["rollout"] = state
        config = {"version": self.runtime.version, "loaded_at": self.loaded_at}
        return {"config": config, "routes": routes, **snapshot}


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
    if target.deployment is not None:  # a model with several deployments: which one answered
        answer.extra_headers["x-turnout-deployment"] = target.deployment
    limit = target.output_limit(request)
    if limit is not None:
        answer.extra_headers["x-turnout-max-tokens"] = f"{limit} (asked {request.max_tokens})"
    return answer


def _reasons(attempts: list[Attempt]) -> list[dict[str, Any]]:
    # every field: a subclass says more (execute/hedge.py's HedgeAttempt: who hedged whom,
    # the loser's cost)
    return [dataclasses.asdict(a) for a in attempts]


def _all_failed(exc: AllTargetsFailed) -> Refused:
    headers = turnout_headers(exc.plan.route, None, exc.tries, exc.attempts)
    # (infinite when every target is misconfigured: nothing is expected back by itself)
    if exc.retry_after is not None and math.isfinite(exc.retry_after):
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
