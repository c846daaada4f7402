"""The typed events the core publishes. Frozen and slotted: one small object per event, the
only allocation publishing makes on the request path."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from turnout.model import Outcome


@dataclass(slots=True, frozen=True)
class AttemptFinished:
    """One upstream attempt ended (a probe's too): what health learns from."""

    outcome: Outcome


@dataclass(slots=True, frozen=True)
class RequestFinished:
    """One client request ended: its ledger row and the caller's key.

    Typed loosely because the row's class (accounting.records.LedgerRow) and the key's
    (KeyRecord) live in accounting, a layer above this one."""

    row: Any
    key: Any = None


class HealthState(StrEnum):
    OPENED = "opened"
    HALF_OPEN = "half_open"
    CLOSED = "closed"
    COOLDOWN_STARTED = "cooldown_started"
    COOLDOWN_ENDED = "cooldown_ended"
    MISCONFIGURED = "misconfigured"
    RECOVERED = "recovered"


@dataclass(slots=True, frozen=True)
class HealthChanged:
    """A model's (or, for a rejected key, a whole provider's: model None) state changed."""

    model: str | None
    provider: str
    state: HealthState
    reason: str | None
    at: float


@dataclass(slots=True, frozen=True)
class BudgetAlert:
    """A budget crossed its soft share (once per budget and period)."""

    scope: str  # key | route | provider
    name: str
    period: str  # daily | monthly
    spent_usd: float
    limit_usd: float
    at: float

    def as_dict(self) -> dict[str, Any]:
        """The shape /admin/events has always shown."""
        return {
            "type": "budget_soft_limit",
            "at": self.at,
            "scope": self.scope,
            "name": self.name,
            "period": self.period,
            "spent_usd": self.spent_usd,
            "limit_usd": self.limit_usd,
        }


Event = AttemptFinished | RequestFinished | HealthChanged | BudgetAlert
