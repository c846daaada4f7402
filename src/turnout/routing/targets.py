"""A target: one model of a plan, with what trying it needs (provider, timeouts, price).

Its own module so that the plan's policies (policies.py, sessions.py) and the planner that
builds them can all name it without importing one another."""

from __future__ import annotations

from dataclasses import dataclass

from turnout.config.schema import ModelConfig, Price, Timeouts
from turnout.providers.base import Provider


@dataclass(slots=True, frozen=True)
class Target:
    name: str  # the model's key in config
    model: ModelConfig
    provider: Provider
    upstream_model: str
    timeouts: Timeouts
    price: Price  # config's, or the default table's
