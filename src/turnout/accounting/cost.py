"""What one answer cost, and what the same tokens would have cost on the route's baseline."""

from __future__ import annotations

from turnout.config.schema import Price
from turnout.model import Usage


def cost_usd(price: Price, usage: Usage) -> float:
    """USD for one answer. Cached prompt tokens are priced at the cached rate, not twice."""
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    fresh = max(0, usage.prompt_tokens - usage.cached_tokens)
    return (
        fresh * price.input
        + usage.cached_tokens * cached_rate
        + usage.completion_tokens * price.output
    ) / 1_000_000
