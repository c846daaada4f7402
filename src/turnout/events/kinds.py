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


@dataclass(slots=True, frozen=True)
class ConfigReloaded:
    """A reload was asked for (SIGHUP, `turnout reload`, a watched file): `ok` when the new
    config now serves, else `error` says why and the previous one still does."""

    ok: bool
    version: str  # the config now serving (the previous one, when the reload failed)
    previous: str
    source: str  # the file read, or "<embedded defaults>"
    error: str | None
    restart_needed: tuple[str, ...]  # changed sections a reload cannot apply (server, ledger...)
    at: float


@dataclass(slots=True, frozen=True)
class AlertChanged:
    """An alert rule (config `alerts:`) started holding (`firing`) or stopped (a recovery):
    one event per change, never one per request. `notify` names the webhook sink to tell."""

    rule: str  # fallback_rate | misconfigured | budget_soft
    firing: bool
    notify: str
    subject: str  # what it is about: a route, a provider, a budget
    message: str  # one line for people
    at: float
    details: dict[str, Any] | None = None  # the figures behind it (rate, window, reason...)


@dataclass(slots=True, frozen=True)
class RolloutChanged:
    """A route's rollout moved: started, entered a stage, promoted (the candidate is now the
    route's primary), rolled back (by the gateway, on a breached objective, or by an
    operator), or aborted. `figures`: the candidate's and the primary's on the window judged."""

    route: str
    candidate: str
    action: str  # started | stage_entered | promoted | rolled_back | aborted
    stage: int  # the stage's index (the one left, on a rollback)
    percent: float  # the candidate's share of the route's requests from now on
    objective: str | None  # the breached objective, on an automatic rollback
    observed: float | None
    limit: float | None
    figures: dict[str, Any]
    at: float


@dataclass(slots=True, frozen=True)
class SharedStateChanged:
    """Counting every gateway process shares (key rate limits, budgets) lost its shared
    backend and falls back to this process's own counts (`shared` False), or rejoined it."""

    what: str  # what is counted: "limits and budgets"
    shared: bool
    reason: str | None  # why it was lost (the error's class), None on rejoining
    at: float

    def as_dict(self) -> dict[str, Any]:
        """Its /admin/events shape (beside the budget alerts)."""
        return {
            "type": "shared_state",
            "at": self.at,
            "what": self.what,
            "shared": self.shared,
            "reason": self.reason,
        }


Event = (
    AttemptFinished
    | RequestFinished
    | HealthChanged
    | BudgetAlert
    | ConfigReloaded
    | AlertChanged
    | RolloutChanged
    | SharedStateChanged
)
