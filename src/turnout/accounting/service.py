"""Accounting for the gateway: the store, spend and budgets, per-key limits, and the cost of
each answer. It learns of each finished client request from the event bus (RequestFinished:
the ledger row and the caller's key), as an inline subscriber."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from turnout.accounting.budgets import AlertLog, SpendTracker, budgets_of
from turnout.accounting.capture import Capture
from turnout.accounting.cost import cost_usd
from turnout.accounting.limits import KeyLimiter
from turnout.accounting.records import KeyRecord, LedgerRow
from turnout.accounting.store import make_store
from turnout.config.schema import Config, Price
from turnout.config.secrets import secrets_in
from turnout.events import Publish, RequestFinished
from turnout.model import Usage

log = logging.getLogger("turnout.accounting")


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

    async def close(self) -> None:
        """Drains every queued row before closing: no row is lost on shutdown."""
        if self.capture is not None:
            await self.capture.close()
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

    def record(self, row: LedgerRow, key: KeyRecord | None = None) -> None:
        row.bound_text()  # client text is bounded and made storable before anything keeps it
        self.spend.add(row)
        if key is not None:
            self.spend.alert_key(key, row.started_at)
            self.limiter.spent_tokens(
                key, row.started_at, row.prompt_tokens + row.completion_tokens
            )
        if self.store is not None:
            self.store.record(row)
