"""The gateway: config turned into live providers, a planner, health and an executor."""

from __future__ import annotations

import logging

from turnout.config.schema import Config
from turnout.execute import Executor
from turnout.health import HealthTracker
from turnout.providers.base import Provider
from turnout.providers.registry import make_provider
from turnout.routing import Planner

log = logging.getLogger("turnout")


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.providers: dict[str, Provider] = {
            name: make_provider(name, provider) for name, provider in config.providers.items()
        }
        self.planner = Planner(config, self.providers)
        self.health = HealthTracker()
        self.executor = Executor(self.health.record)
        for name, model in config.models.items():
            self.health.register(name, model.provider)

    async def start(self) -> None:
        for name, provider in self.providers.items():
            reason = provider.unavailable_reason()
            if reason:
                self.health.mark_misconfigured(name, reason)
                continue
            await provider.start()

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()
