"""A model's deployments (regions, base URLs, keys), ordered per request.

A model with several deployments stays one model for routing: policies, session consistency
and the client's exclusions see it once (its first deployment stands for it), and only then
is it expanded into its deployments, best first: the lowest `priority`, then, among equal
priorities, the lower recent TTFT. Health is kept per deployment, so the scheduler skips a
deployment whose breaker is open and tries the next one before the route's next model; once
the preferred deployment's probe succeeds it is first again.

Models with one provider never reach this module (the plan has no groups for them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from turnout.health import HealthEngine
from turnout.routing.targets import Target


def grouped(targets: Sequence[Target]) -> dict[str, tuple[Target, ...]]:
    """Model name -> its deployments, for the models of `targets` that have several."""
    groups: dict[str, list[Target]] = {}
    for target in targets:
        if target.deployment is not None:
            groups.setdefault(target.name, []).append(target)
    return {name: tuple(group) for name, group in groups.items()}


def heads(targets: Sequence[Target]) -> list[Target]:
    """One target per model: a model's first deployment stands for all of them."""
    seen: set[str] = set()
    kept = []
    for target in targets:
        if target.name not in seen:
            seen.add(target.name)
            kept.append(target)
    return kept


def expand(
    models: Sequence[Target], groups: Mapping[str, tuple[Target, ...]], health: HealthEngine
) -> list[Target]:
    """Each model of `models` (in their order) as its deployments, best first."""
    expanded: list[Target] = []
    for target in models:
        group = groups.get(target.name)
        if group is None:
            expanded.append(target)
        else:
            expanded += ordered(group, health)
    return expanded


def ordered(group: Sequence[Target], health: HealthEngine) -> list[Target]:
    """A model's deployments, best first: lowest priority, then the lower recent TTFT.

    A deployment not measured yet counts as the fastest among its equals, so that it gets
    measured (the order it was configured in breaks the remaining ties)."""

    def rank(target: Target) -> tuple[int, float]:
        return target.priority, recent_ttft(health, target) or 0.0

    return sorted(group, key=rank)


def recent_ttft(health: HealthEngine, target: Target) -> float | None:
    """The deployment's recent time to first token (an EWMA), or its whole latency where
    no stream measured a first token; None before any answer."""
    model = health.models.get(target.key)
    if model is None:
        return None
    latency = model.latency
    return latency.all_ttft.ewma if latency.all_ttft.ewma is not None else latency.all_total.ewma
