"""Accounting for the gateway: the store, spend and budgets, per-key limits, and the cost of
each answer. It learns of each finished client request from the event bus (RequestFinished:
the ledger row and the caller's key), as an inline subscriber."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from turnout import clock
from turnout.accounting.budgets import (
    AlertLog,
    Budget,
    SpendTracker,
    Verdict,
    budgets_of,
    period_end,
    period_start,
    verdict,
)
from turnout.accounting.capture import Capture
from turnout.accounting.cost import cost_usd
from turnout.accounting.limits import KeyLimiter
from turnout.accounting.records import KeyRecord, LedgerRow
from turnout.accounting.shared import Charge, Settlement, SharedCounters
from turnout.accounting.store import make_store
from turnout.config.schema import Config, Price
from turnout.config.secrets import secrets_in
from turnout.events import Publish, RequestFinished
from turnout.model import Usage

log = logging.getLogger("turnout.accounting")


def _nobody(_: object) -> None:
    """Where shared counting sends its events when the gateway gave no bus."""


def data_dir(config: Config) -> Path:
    path = config.data_dir or os.environ.get("TURNOUT_DATA_DIR") or "~/.local/share/turnout"
    return Path(path).expanduser()


def make_configured_store(config: Config):

    ledger = config.ledger
    if ledger.backend == "off":
        return None
    if ledger.backend == "postgres":
        assert ledger.dsn is not None
        return make_store("postgres", None, ledger.dsn.reveal())
    return make_store("sqlite", ledger.path or str(data_dir(config) / "turnout.db"), None)


class Accounting:
    def __init__(self, config: Config, publish: Publish | None = None) -> None:
        self.store = make_configured_store(config)
        self.spend = SpendTracker(budgets_of(config), publish)  # publishes BudgetAlert
        self.alerts = AlertLog()  # subscribed to BudgetAlert by the gateway
        self.limiter = KeyLimiter()
        # with `state: {backend: redis}` key limits and budgets are counted in Redis, so that
        # every process sharing it enforces them once (this process's counts when it is away)
        state = config.state
        self.shared = (
            SharedCounters(state.url, state.prefix, publish or _nobody, on_soft=self._soft)
            if state.backend == "redis"
            else None
        )
        if self.shared is not None:
            shared = self.shared  # soft alerts: once for the fleet while counting is shared
            self.spend.alerts_shared = lambda: shared.shared
        self._reserved: set[str] = set()  # requests holding a reservation in Redis
        # per route, the most output tokens an answer had: what a request without max_tokens
        # is expected to write when its cost is reserved
        self.typical_output: dict[str, int] = {}
        captured = {name: r.capture for name, r in config.routes.items() if r.capture}
        self.capture = (
            Capture(data_dir(config) / "captures", captured, secrets_in(config))
            if captured
            else None
        )

    async def start(self) -> None:
        if self.store is not None:
            await self.store.start()
            await self.spend.load(self.store)
        if self.shared is not None:
            await self.shared.start()

    async def close(self) -> None:
        """Drains every queued row before closing: no row is lost on shutdown."""
        if self.capture is not None:
            await self.capture.close()
        if self.shared is not None:
            await self.shared.close()
        if self.store is not None:
            await self.store.close()

    @staticmethod
    def price(row: LedgerRow, price: Price, usage: Usage, baseline: Price | None) -> None:
        row.prompt_tokens = usage.prompt_tokens
        row.cached_tokens = usage.cached_tokens
        row.completion_tokens = usage.completion_tokens
        row.provider_cost_usd = usage.cost
        row.cost_usd = cost_usd(price, usage)
        row.baseline_cost_usd = cost_usd(baseline, usage) if baseline else row.cost_usd

    def ledger_stats(self) -> dict[str, int] | None:
        """The ledger writer's counters (queued, written, dropped, ...); None with no ledger."""
        return self.store.stats() if self.store is not None else None

    def on_request(self, event: RequestFinished) -> None:
        """The bus subscriber (inline: O(1), the store's writer queues the row)."""
        self.record(event.row, event.key)

    def counts_shared(self, key: KeyRecord | None, route: str, budgets: tuple[Budget, ...]) -> bool:
        """Whether a request's limits or budgets are counted by the fleet (`admit`, one Redis
        round trip); when not, this process counts them synchronously (admission.admit), so
        the usual request, with neither, pays for no coroutine."""
        shared = self.shared
        if shared is None or not shared.shared:
            return False
        limited = key is not None and (key.rpm is not None or key.tpm is not None)
        return limited or bool(self.spend.applicable(key, route, budgets))

    async def admit(
        self,
        request_id: str,
        key: KeyRecord | None,
        route: str,
        budgets: tuple[Budget, ...],
        estimate: Callable[[], float],
        now: float,
    ) -> tuple[float | None, Verdict]:
        """The key's rate limits, then the budgets: (seconds to wait when a limit refuses
        the request, else None; the budgets' verdict). One Redis round trip when counting is
        shared (and a limit or budget applies at all); this process's counts otherwise.
        `estimate`: the request's expected cost, reserved against key and route budgets."""
        shared = self.shared
        limited = key is not None and (key.rpm is not None or key.tpm is not None)
        if shared is not None and shared.shared:
            applicable = self.spend.applicable(key, route, budgets)
            if limited or applicable:
                charges = [self._charge(shared, b, now) for b in applicable]
                reserve = estimate() if any(c.reserve for c in charges) else 0.0
                admission = await shared.admit(
                    request_id,
                    key.id if key is not None else None,
                    key.rpm if key is not None else None,
                    key.tpm if key is not None else None,
                    charges,
                    reserve,
                )
                if admission is not None:
                    if admission.wait is not None:
                        return admission.wait, Verdict()
                    if admission.blocked is not None:
                        return None, Verdict(blocked=admission.blocked)
                    if reserve:
                        self._reserved.add(request_id)
                    return None, verdict(admission.over)
        wait = self.limiter.admit(key, now) if limited and key is not None else None
        if wait is not None:
            return wait, Verdict()
        return None, self.spend.check(key, route, budgets, now)

    def _charge(self, shared: SharedCounters, budget: Budget, now: float) -> Charge:
        start = period_start(budget.period, now)
        ttl = int(period_end(budget.period, now) - now) + 86_400  # a day past its period
        return Charge(
            budget,
            shared.counter(budget.scope, budget.name, budget.period, start),
            self.spend.spent(budget.scope, budget.name, budget.period, now),
            budget.scope != "provider",  # a provider's is charged only if it answers
            ttl,
        )

    def _settle(self, shared: SharedCounters, row: LedgerRow, key: KeyRecord | None) -> None:
        """The request's reservation goes, its real cost and tokens are counted (queued)."""
        reserved = row.id in self._reserved
        self._reserved.discard(row.id)
        tokens = row.prompt_tokens + row.completion_tokens if key is not None and key.tpm else 0
        budgets = [
            b
            for b in self.spend.applicable(key, row.route, self.spend.budgets)
            if b.scope != "provider" or b.name == row.provider
        ]
        if not (reserved or tokens or (row.cost_usd and budgets)):
            return
        now = row.started_at
        counters = tuple(
            (
                shared.counter(b.scope, b.name, b.period, period_start(b.period, now)),
                self.spend.spent(b.scope, b.name, b.period, now),
                int(period_end(b.period, now) - now) + 86_400,
            )
            for b in budgets
        )
        tpm_key = shared.tpm_key(key.id if key is not None else "-")
        shared.settle(
            Settlement(row.id, tpm_key, tokens, row.cost_usd or 0.0, counters, tuple(budgets))
        )

    def _soft(self, budget: Budget, spent: float) -> None:
        """The fleet's spend first passed `budget`'s soft share in this process's settlement."""
        self.spend.alert(budget, spent, clock.now())

    def record(self, row: LedgerRow, key: KeyRecord | None = None) -> None:
        row.bound_text()  # client text is bounded and made storable before anything keeps it
        if self.shared is not None:
            self._settle(self.shared, row, key)  # (before spend.add: its seeds exclude the row)
        if row.completion_tokens > self.typical_output.get(row.route, 0):
            self.typical_output[row.route] = row.completion_tokens
        self.spend.add(row)
        if key is not None:
            self.spend.alert_key(key, row.started_at)
            self.limiter.spent_tokens(
                key, row.started_at, row.prompt_tokens + row.completion_tokens
            )
        if self.store is not None:
            self.store.record(row)
