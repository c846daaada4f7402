"""Route policies: the order targets are tried in. Whatever a policy puts first, the rest of
the route follows as its fallback chain."""

from __future__ import annotations

import random
from collections.abc import Sequence

from turnout.health import HealthEngine
from turnout.routing.planner import Target


def weighted(
    targets: Sequence[Target], weights: dict[str, float], rng: random.Random
) -> list[Target]:
    """One target drawn by weight goes first; the others keep their configured order."""
    candidates = [t for t in targets if weights.get(t.name, 0) > 0]
    if not candidates:
        return list(targets)
    first = rng.choices(candidates, [weights[t.name] for t in candidates])[0]
    return [first, *(t for t in targets if t is not first)]


def cheapest(targets: Sequence[Target], prompt_tokens: int, output_tokens: int) -> list[Target]:
    """Lowest expected cost of this request first (prices per 1M tokens)."""

    def cost(target: Target) -> float:
        price = target.price
        return prompt_tokens * price.input + output_tokens * price.output

    return sorted(targets, key=cost)  # stable: equal prices keep the configured order


def fastest(targets: Sequence[Target], health: HealthEngine, prompt_tokens: int) -> list[Target]:
    """Lowest recent TTFT p50 first (total latency where no stream measured a first token),
    for this prompt size when known. A model with no figures yet goes first, so every model
    gets measured (optimism under uncertainty)."""

    def speed(target: Target) -> float:
        model = health.models.get(target.name)
        value = model.latency.speed_p50(prompt_tokens) if model else None
        return -1.0 if value is None else value

    return sorted(targets, key=speed)
