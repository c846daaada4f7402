"""The gateway: config turned into live providers, a planner, health, an executor and the
event bus they and accounting meet on."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

from turnout.accounting.auth import Authenticator
from turnout.accounting.service import Accounting
from turnout.config.schema import Config
from turnout.config.secrets import SecretRedactor, secrets_in
from turnout.events import AttemptFinished, BudgetAlert, EventBus, RequestFinished
from turnout.execute import Executor
from turnout.health import HealthEngine
from turnout.health.state import make_store
from turnout.providers.base import Provider
from turnout.providers.registry import make_provider
from turnout.routing import Planner
from turnout.routing.selector import Selector

log = logging.getLogger("turnout")


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.providers: dict[str, Provider] = {
            name: make_provider(name, provider) for name, provider in config.providers.items()
        }
        self.redactor = SecretRedactor.of(secrets_in(config))  # every secret, gathered once
        for provider in self.providers.values():
            provider.redactor = self.redactor
        self.planner = Planner(config, self.providers)
        store = make_store(config.state.backend, config.state.url, config.state.prefix)
        self.bus = EventBus()
        self.health = HealthEngine(config.health, store, self.bus.publish)
        self.executor = Executor(self.health, self.bus.publish)
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
        self.auth = Authenticator(config, self.accounting.store)
        self._probes: asyncio.Task[None] | None = None
        self._probing: set[str] = set()

    async def start(self) -> None:
        await self.bus.start()
        await self.accounting.start()
        await self.auth.start()
        for name, provider in self.providers.items():
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
        for provider in self.providers.values():
            await provider.close()
        await self.bus.close()  # queued subscribers get what was published before closing
        await self.accounting.close()  # last: drains every ledger row still queued

    async def _probe_loop(self) -> None:
        """Half-open models with no traffic, and rejected keys, get a synthetic tiny request."""
        while True:
            await asyncio.sleep(self.config.health.probe_interval)
            now = time.time()
            for model in self.health.due_probes(now):
                plan = self.planner.plan(model)
                if plan is None or model in self._probing:
                    continue
                target = plan.targets[0]
                if target.provider.unavailable_reason():
                    continue
                if self.health.skip_reason(model, now) is not None:
                    continue  # (this call also claims the half-open probe slot)
                self._probing.add(model)
                task = asyncio.create_task(self.executor.probe(plan, target))
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
