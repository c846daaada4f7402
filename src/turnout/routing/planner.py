"""Turns the `model` a client named into a plan: the route and its ordered targets.

A route name gives its targets in order (failover); a model name forces that one model.
Plans are built once at start, so planning a request is one dictionary lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from turnout.accounting.prices import price_of
from turnout.config.schema import Config, ModelConfig, Price, RetryConfig, Timeouts
from turnout.providers.base import Provider


@dataclass(slots=True, frozen=True)
class Target:
    name: str  # the model's key in config
    model: ModelConfig
    provider: Provider
    upstream_model: str
    timeouts: Timeouts
    price: Price  # config's, or the default table's


@dataclass(slots=True, frozen=True)
class Plan:
    route: str  # the route's name, or the forced model's name
    targets: tuple[Target, ...]
    retry: RetryConfig
    forced: bool = False
    stale_max_age: float | None = None  # serve a stored answer when nothing can answer
    queue_max_wait: float | None = None  # or wait this long for a target to come back
    output_schema: dict[str, Any] | None = None  # the route's own schema for every answer
    guard_retries: int = 0  # invalid JSON: tries again on the same model first
    buffer_streams: bool = False  # validate streamed JSON answers before sending them
    baseline: Price | None = None  # savings are counted against this price


def _timeouts(base: Timeouts, model: ModelConfig) -> Timeouts:
    override = model.timeout.model_dump(exclude_none=True)
    return base.model_copy(update=override) if override else base


class Planner:
    def __init__(self, config: Config, providers: dict[str, Provider]) -> None:
        self.plans: dict[str, Plan] = {}
        for name, route in config.routes.items():
            targets = tuple(
                self._target(t, config.models[t], providers, route.timeout) for t in route.targets
            )
            self.plans[name] = Plan(
                name,
                targets,
                route.retry,
                stale_max_age=route.stale_if_error.max_age if route.stale_if_error else None,
                queue_max_wait=route.queue.max_wait if route.queue else None,
                output_schema=route.output_schema,
                guard_retries=route.guard.retry_same,
                buffer_streams=route.guard.buffer_streams,
                baseline=(
                    price_of(route.baseline, config.models[route.baseline])
                    if route.baseline
                    else None
                ),
            )
        for name, model in config.models.items():
            target = self._target(name, model, providers, Timeouts())
            self.plans[name] = Plan(name, (target,), RetryConfig(), forced=True)

    @staticmethod
    def _target(
        name: str, model: ModelConfig, providers: dict[str, Provider], base: Timeouts
    ) -> Target:
        return Target(
            name=name,
            model=model,
            provider=providers[model.provider],
            upstream_model=model.model or name,
            timeouts=_timeouts(base, model),
            price=price_of(name, model),
        )

    def plan(self, requested: str) -> Plan | None:
        return self.plans.get(requested)
