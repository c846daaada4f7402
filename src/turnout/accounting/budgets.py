"""Budgets: daily and monthly USD limits per key, route and provider.

Spend comes from ledger rows as they are recorded (and, at start, from the store's sums
for the current UTC day and month, so a restart forgets nothing). Crossing a budget's
`soft` share publishes a BudgetAlert once per period (AlertLog keeps the last ones for
/admin/events; with shared counting, once for the fleet: accounting/shared.py judges the
fleet's spend); reaching the limit blocks (429 naming the budget) or downgrades the request
to the route's cheapest targets (`on_exceed`)."""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from turnout import clock
from turnout.accounting.records import KeyRecord, LedgerRow
from turnout.config.schema import Config
from turnout.events import BudgetAlert, Publish, SharedStateChanged

log = logging.getLogger("turnout.budgets")
PERIODS = ("daily", "monthly")


_DAY = 86_400.0
_current: dict[str, tuple[float, float]] = {}  # period -> (start, next start): the hot path's cache


def _boundaries(period: str, now: float) -> tuple[float, float]:
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day.timestamp(), day.timestamp() + _DAY
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first.timestamp(), following.timestamp()


def period_start(period: str, now: float) -> float:
    """The UTC start of the day or month `now` falls in (cached until it ends)."""
    cached = _current.get(period)
    if cached is not None and cached[0] <= now < cached[1]:
        return cached[0]
    start, end = _boundaries(period, now)
    if start <= clock.now() < end:
        _current[period] = (start, end)  # keep only the current period in the cache
    return start


def period_end(period: str, now: float) -> float:
    """When the day or month `now` falls in ends (UTC)."""
    return _boundaries(period, now)[1]


@dataclass(slots=True, frozen=True)
class Budget:
    scope: str  # key | route | provider
    name: str  # key id, route name or provider name
    period: str  # daily | monthly
    usd: float
    soft: float = 0.8
    on_exceed: str = "block"

    @property
    def label(self) -> str:
        return f"{self.period} budget of {self.scope} {self.name} (${self.usd:g})"


@dataclass(slots=True, frozen=True)
class Verdict:
    blocked: Budget | None = None
    downgrade: bool = False
    providers_over: frozenset[str] = frozenset()  # providers whose own budget is spent


_NO_BUDGETS = Verdict()  # the verdict of every request no budget applies to


class AlertLog:
    """The last budget alerts (and shared-counting changes), for /admin/events: a
    subscriber of the bus."""

    def __init__(self, size: int = 1000) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=size)

    def on_alert(self, alert: BudgetAlert | SharedStateChanged) -> None:
        self.events.append(alert.as_dict())


def _nobody(_: object) -> None:
    """Where a SpendTracker built without a bus sends its alerts."""


def _never() -> bool:
    return False


def verdict(spent: Iterable[Budget]) -> Verdict:
    """What the budgets already spent do to a request: a provider's skips its models, a
    downgrading one keeps only the cheapest targets, the first blocking one refuses it."""
    blocked: Budget | None = None
    downgrade = False
    over_providers = set()
    for budget in spent:
        if budget.scope == "provider":
            over_providers.add(budget.name)  # its models are skipped; others may answer
        elif budget.on_exceed == "downgrade":
            downgrade = True
        elif blocked is None:
            blocked = budget
    return Verdict(blocked, downgrade, frozenset(over_providers))


def budgets_of(config: Config) -> tuple[Budget, ...]:
    """The config's budgets, one per scope, name and period: part of the runtime snapshot."""
    return tuple(
        Budget(entry.scope, entry.name, period, usd, entry.soft, entry.on_exceed)
        for entry in config.budgets
        for period, usd in (("daily", entry.daily_usd), ("monthly", entry.monthly_usd))
        if usd is not None
    )


class SpendTracker:
    """What has been spent this day and month, per key, route and provider: long-lived state.
    The budgets themselves come from the runtime snapshot: a request checks its own
    runtime's (`check`), and alerts follow the ones installed last (`use`)."""

    def __init__(self, budgets: tuple[Budget, ...] = (), publish: Publish | None = None) -> None:
        self.publish = publish or _nobody
        # (scope, name, period) -> [period start, spent]
        self._spent: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        self._alerted: set[tuple[str, str, str, float]] = set()
        # whether the fleet raises soft alerts now (shared counting: accounting/shared.py),
        # on the spend of every process rather than this one's share of it
        self.alerts_shared: Callable[[], bool] = _never
        self.use(budgets)

    def use(self, budgets: tuple[Budget, ...]) -> None:
        """The budgets alerts are raised against (the current runtime's)."""
        self.budgets = budgets
        # route and provider spend matters only to their budgets; a key's is always kept
        # (an admin may give the key a budget at any time, and /admin/keys shows it)
        self._budgeted = {(b.scope, b.name) for b in budgets}

    async def load(self, store: Any) -> None:
        """Today's and this month's spend so far, from the store."""
        now = clock.now()
        for period in PERIODS:
            since = period_start(period, now)
            for scope, column in (("key", "key_id"), ("route", "route"), ("provider", "provider")):
                for name, usd in (await store.spend(since, column)).items():
                    if name:
                        self._spent[(scope, name, period)] = [since, usd]

    def spent(self, scope: str, name: str, period: str, now: float | None = None) -> float:
        now = clock.now() if now is None else now
        start, usd = self._spent.get((scope, name, period), (0.0, 0.0))
        return usd if start == period_start(period, now) else 0.0

    def add(self, row: LedgerRow) -> None:
        # no key and no budget configured (the usual case): nothing is tracked
        if not row.cost_usd or (row.key_id is None and not self._budgeted):
            return
        now = row.started_at
        for scope, name in (("key", row.key_id), ("route", row.route), ("provider", row.provider)):
            if not name or (scope != "key" and (scope, name) not in self._budgeted):
                continue
            for period in PERIODS:
                start = period_start(period, now)
                entry = self._spent[(scope, name, period)]
                if entry[0] != start:
                    entry[0], entry[1] = start, 0.0  # a new day or month
                entry[1] += row.cost_usd
        self._alert_soft(now)

    def _key_budgets(self, key: KeyRecord | None) -> list[Budget]:
        if key is None:
            return []
        on_exceed = key.on_exceed
        return [
            Budget("key", key.id, period, usd, 0.8, on_exceed)
            for period, usd in (
                ("daily", key.daily_budget_usd),
                ("monthly", key.monthly_budget_usd),
            )
            if usd is not None
        ]

    def applicable(
        self, key: KeyRecord | None, route: str, budgets: tuple[Budget, ...]
    ) -> list[Budget]:
        """The budgets a request of `key` on `route` is checked against: its key's, its
        route's and every provider's (those skip their models rather than refuse)."""
        return [
            b for b in (*self._key_budgets(key), *budgets) if b.scope != "route" or b.name == route
        ]

    def check(
        self,
        key: KeyRecord | None,
        route: str,
        budgets: tuple[Budget, ...],
        now: float | None = None,
    ) -> Verdict:
        """The verdict of the request's own runtime's `budgets` (and its key's)."""
        if key is None and not budgets:
            return _NO_BUDGETS
        applicable = self.applicable(key, route, budgets)
        if not applicable:
            return _NO_BUDGETS
        now = clock.now() if now is None else now
        return verdict(b for b in applicable if self.spent(b.scope, b.name, b.period, now) >= b.usd)

    def _alert_soft(self, now: float) -> None:
        for budget in self.budgets:
            self._alert_if_over(budget, now)

    def alert_key(self, key: KeyRecord | None, now: float) -> None:
        for budget in self._key_budgets(key):
            self._alert_if_over(budget, now)

    def _alert_if_over(self, budget: Budget, now: float) -> None:
        if self.alerts_shared():
            return  # the fleet judges the soft share on its shared spend (accounting/shared.py)
        spent = self.spent(budget.scope, budget.name, budget.period, now)
        if spent >= budget.soft * budget.usd:
            self.alert(budget, spent, now)

    def alert(self, budget: Budget, spent: float, now: float) -> None:
        """The soft-share alert of `budget` for the period `now` falls in, unless this
        process raised it already (the fleet's one alert is raised here too, to say so)."""
        marker = (budget.scope, budget.name, budget.period, period_start(budget.period, now))
        if marker in self._alerted:
            return
        self._alerted.add(marker)
        self.publish(
            BudgetAlert(budget.scope, budget.name, budget.period, round(spent, 6), budget.usd, now)
        )
        log.warning("%s is %.0f%% spent ($%.4f)", budget.label, 100 * spent / budget.usd, spent)
