"""The event bus: typed events published by the core, and the subscribers that learn from
them (health, the ledger, budget alerts; later metrics, sinks, the dashboard, rollouts)."""

from turnout.events.bus import EventBus, Publish, Subscription
from turnout.events.kinds import (
    AttemptFinished,
    BudgetAlert,
    ConfigReloaded,
    Event,
    HealthChanged,
    HealthState,
    RequestFinished,
    RolloutChanged,
    SharedStateChanged,
)

__all__ = [
    "AttemptFinished",
    "BudgetAlert",
    "ConfigReloaded",
    "Event",
    "EventBus",
    "HealthChanged",
    "HealthState",
    "Publish",
    "RequestFinished",
    "RolloutChanged",
    "SharedStateChanged",
    "Subscription",
]
