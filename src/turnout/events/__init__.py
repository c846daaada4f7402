"""The event bus: typed events published by the core, and the subscribers that learn from
them (health, the ledger, budget alerts; later metrics, sinks, the dashboard, rollouts)."""

from turnout.events.bus import EventBus, Publish, Subscription
from turnout.events.kinds import (
    AttemptFinished,
    BudgetAlert,
    Event,
    HealthChanged,
    HealthState,
    RequestFinished,
)

__all__ = [
    "AttemptFinished",
    "BudgetAlert",
    "Event",
    "EventBus",
    "HealthChanged",
    "HealthState",
    "Publish",
    "RequestFinished",
    "Subscription",
]
