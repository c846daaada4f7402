"""Turns the `model` a client named into a plan: the route, its ordered targets and the
objects that order them per request (its policy and session consistency).

A route name gives its targets in order (failover); a model name forces that one model.
Plans are built once at start, so planning a request is one dictionary lookup and selecting
never reads the config.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from turnout.accounting.prices import price_of
from turnout.config.load import ConfigError
from turnout.config.schema import (
    Config,
    HedgeConfig,
    ModelConfig,
    Price,
    RetryConfig,
    RouteConfig,
    Timeouts,
)
from turnout.providers.base import Provider
from turnout.routing.deployments import grouped
from turnout.routing.policies import POLICIES, Policy, Priority, build_policies
from turnout.routing.sessions import SessionConsistency
from turnout.routing.targets import Target

_IN_ORDER = Priority()  # a forced model's plan: one target, nothing to order


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
    policy: Policy = _IN_ORDER  # the route's configured policy
    # every registered policy built for this route: what an admin's override header names
    policies: Mapping[str, Policy] = field(default_factory=dict)
    consistency: SessionConsistency | None = None  # session stickiness, after the policy
    strict_max_tokens: bool = False  # skip targets that cannot write max_tokens (else clamp)
    candidate: Target | None = None  # the route's rollout candidate (rollouts/ decides its share)
    hedge: HedgeConfig | None = None  # a second attempt when the first is slow (execute/hedge.py)
    # a committed stream that breaks: "error" (explicit error event) or "continue" on the next
    # target (execute/continuation.py)
    on_stream_break: str = "error"
    # whether any target declares a context window (a prompt may then be too long for it)
    context_windows: bool = field(init=False, default=False)
    # model -> its deployments, for the models of `targets` that have several (each is then
    # one target per deployment, in a row): the selector orders them per request
    groups: Mapping[str, tuple[Target, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        windows = any(t.model.context_window for t in self.targets)
        object.__setattr__(self, "context_windows", windows)  # derived once, at plan time


def _timeouts(base: Timeouts, model: ModelConfig) -> Timeouts:
    override = model.timeout.model_dump(exclude_none=True)
    return base.model_copy(update=override) if override else base


class Planner:
    def __init__(
        self,
        config: Config,
        providers: dict[str, Provider],
        seed: int | None = None,
        previous: Planner | None = None,
    ) -> None:
        """`previous`: the planner this one replaces (a reload); its routes' session memory
        is kept where their consistency settings are unchanged."""
        self.plans: dict[str, Plan] = {}
        rng = random.Random(seed)  # the weighted draws of every route
        for name, route in config.routes.items():
            targets = tuple(
                target
                for t in route.targets
                for target in self._targets(t, config.models[t], providers, route.timeout)
            )
            policies = _route_policies(name, route, rng)
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
                policy=policies[route.policy],
                policies=policies,
                consistency=_consistency(name, route, previous),
                strict_max_tokens=route.max_tokens == "strict",
                hedge=route.hedge,
                on_stream_break=route.on_stream_break,
                # (a candidate with several deployments is tried at its preferred one)
                candidate=self._targets(
                    route.rollout.candidate,
                    config.models[route.rollout.candidate],
                    providers,
                    route.timeout,
                )[0]
                if route.rollout
                else None,
                groups=grouped(targets),
            )
        for name, model in config.models.items():
            targets = self._targets(name, model, providers, Timeouts())
            self.plans[name] = Plan(
                name, targets, RetryConfig(), forced=True, groups=grouped(targets)
            )
            if model.deployments is not None:
                # `model: scout@east` forces one deployment: what `turnout check` asks each
                # deployment with, and an operator's way to try one region
                for target in targets:
                    self.plans[target.key] = Plan(target.key, (target,), RetryConfig(), forced=True)

    @staticmethod
    def _targets(
        name: str, model: ModelConfig, providers: dict[str, Provider], base: Timeouts
    ) -> tuple[Target, ...]:
        """The model's target: one per deployment for a model with several (by priority)."""
        timeouts, price = _timeouts(base, model), price_of(name, model)
        if model.deployments is None:
            assert model.provider is not None  # (config: one of provider, deployments)
            provider = providers[model.provider]
            return (Target(name, model, provider, model.model or name, timeouts, price),)
        return tuple(
            Target(
                name=name,
                model=model,
                provider=providers[d.provider],
                upstream_model=d.model or model.model or name,
                timeouts=timeouts,
                price=price,
                deployment=d.label,
                priority=d.priority,
            )
            for d in sorted(model.deployments, key=lambda d: d.priority)
        )

    def plan(self, requested: str) -> Plan | None:
        return self.plans.get(requested)


def _consistency(
    name: str, route: RouteConfig, previous: Planner | None
) -> SessionConsistency | None:
    if route.consistency is None:
        return None
    before = previous.plans.get(name) if previous is not None else None
    kept = before.consistency if before is not None else None
    # across a reload, the sessions the route remembers stay on their models
    return SessionConsistency(name, route.consistency, kept.sessions if kept else None)


def _route_policies(name: str, route: RouteConfig, rng: random.Random) -> dict[str, Policy]:
    # config checks the name when routing is imported before it loads (cli does); this is for
    # a config validated without it
    if route.policy not in POLICIES:
        raise ConfigError(
            f"routes.{name}.policy: must be one of {', '.join(POLICIES)}, not {route.policy!r}"
        )
    return build_policies(route, rng)
