"""Route policies: the order targets are tried in. Whatever a policy puts first, the rest of
the route follows as its fallback chain.

Each policy is a class registered under the name a route's config (`policy:`) and the admin
header `x-turnout-route-policy` give it. The planner builds one object per route at start, so
a request asks its plan's policy and never reads the config. Adding a policy is one class
here with `@register("name")`; the config learns the name from this registry."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import ClassVar

from turnout.config.schema import RouteConfig, register_route_policies
from turnout.health import HealthEngine
from turnout.model import Request
from turnout.model.tokens import estimate_prompt_tokens
from turnout.routing.targets import Target

_DEFAULT_OUTPUT_TOKENS = 256  # expected answer length when the client names no max_tokens


class Policy:
    """Orders a route's targets for one request. The base order is the configured one."""

    name: ClassVar[str] = ""

    @classmethod
    def for_route(cls, route: RouteConfig, rng: random.Random) -> Policy:
        """The policy of one route, built once from its config when the plans are built."""
        return cls()

    def order(
        self, targets: list[Target], request: Request, health: HealthEngine, prompt: int | None
    ) -> list[Target]:
        """`prompt` is the prompt's token count when the context check had to count it."""
        return targets


# name -> class: the one list of policy names (config validates `policy:` against it)
POLICIES: dict[str, type[Policy]] = {}
register_route_policies(POLICIES.keys())  # a live view: names registered later count too


def register(name: str) -> Callable[[type[Policy]], type[Policy]]:
    def add(cls: type[Policy]) -> type[Policy]:
        cls.name = name
        POLICIES[name] = cls
        return cls

    return add


def build_policies(route: RouteConfig, rng: random.Random) -> dict[str, Policy]:
    """Every registered policy built for `route`: its own, and those an admin may ask for."""
    return {name: cls.for_route(route, rng) for name, cls in POLICIES.items()}


def _prompt_tokens(request: Request, counted: int | None) -> int:
    return counted if counted is not None else estimate_prompt_tokens(request)


@register("priority")
class Priority(Policy):
    """The targets in the order the route lists them."""


@register("weighted")
class Weighted(Policy):
    """One target drawn by weight goes first; the others keep their configured order."""

    def __init__(self, weights: dict[str, float], rng: random.Random) -> None:
        self.weights = weights
        self.rng = rng

    @classmethod
    def for_route(cls, route: RouteConfig, rng: random.Random) -> Policy:
        return cls(route.weights, rng)

    def order(
        self, targets: list[Target], request: Request, health: HealthEngine, prompt: int | None
    ) -> list[Target]:
        weights = self.weights
        candidates = [t for t in targets if weights.get(t.name, 0) > 0]
        if not candidates:
            return targets  # no weights (an admin's override on an unweighted route)
        first = self.rng.choices(candidates, [weights[t.name] for t in candidates])[0]
        return [first, *(t for t in targets if t is not first)]


@register("cheapest")
class Cheapest(Policy):
    """Lowest expected cost of this request first (prices per 1M tokens)."""

    def order(
        self, targets: list[Target], request: Request, health: HealthEngine, prompt: int | None
    ) -> list[Target]:
        prompt_tokens = _prompt_tokens(request, prompt)
        output_tokens = request.max_tokens or _DEFAULT_OUTPUT_TOKENS

        def cost(target: Target) -> float:
            price = target.price
            return prompt_tokens * price.input + output_tokens * price.output

        return sorted(targets, key=cost)  # stable: equal prices keep the configured order


@register("fastest")
class Fastest(Policy):
    """Lowest recent TTFT p50 first (total latency where no stream measured a first token),
    for this prompt size when known. A model with no figures yet goes first, so every model
    gets measured (optimism under uncertainty)."""

    def order(
        self, targets: list[Target], request: Request, health: HealthEngine, prompt: int | None
    ) -> list[Target]:
        prompt_tokens = _prompt_tokens(request, prompt)

        def speed(target: Target) -> float:
            model = health.models.get(target.key)
            value = model.latency.speed_p50(prompt_tokens) if model else None
            return -1.0 if value is None else value

        return sorted(targets, key=speed)
