"""One sink's delivery: a queued bus subscription, batching, retries with backoff, counters.

The bus gives the subscription a bounded queue and its own task (events/bus.py), so a slow
or dead sink never holds a request: the queue fills and the bus drops (and counts) what no
longer fits. The handler here runs on that task: it turns each bus event into the exported
events the sink wants, gathers them while more are waiting in the queue (up to a batch), and
delivers the batch when the queue is empty or the batch is full. A delivery that fails is
tried again after `backoff`, doubling up to `max_backoff`, `retries` times; then the batch is
dropped, counted in `failed`, and the handler raises so the bus counts an error too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from turnout.config.secrets import SecretRedactor
from turnout.config.sinks import SinkConfig
from turnout.events import EventBus, Subscription
from turnout.events.kinds import AlertChanged
from turnout.sinks.base import Sink
from turnout.sinks.exported import EXPORTERS, Exported, Exporter, export

log = logging.getLogger("turnout.sinks")


class DeliveryFailed(Exception):
    """A batch given up after its retries (the bus counts it as the subscriber's error)."""


class SinkStats:
    """Per sink, in events: `delivered` (the sink took them), `failed` (dropped after every
    retry failed), `dropped` (never tried: the queue was full), and `errors` (failed tries)."""

    __slots__ = ("delivered", "errors", "failed")

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.errors = 0


class SinkWorker:
    def __init__(
        self,
        config: SinkConfig,
        sink: Sink,
        redactor: Callable[[], SecretRedactor],
        exporters: dict[str, Exporter] | None = None,
        notified: bool = False,
    ) -> None:
        """`notified`: an alert rule names this sink in `notify`."""
        self.config = config
        self.name = config.name
        self.sink = sink
        self.counts = SinkStats()
        self._redactor = redactor
        exporters = EXPORTERS if exporters is None else exporters
        by_source: dict[type, list[Exporter]] = {}
        wanted = config.wanted()
        # alerts: a sink gets those of the rules that notify it, and every one if it asks
        # for `alert` itself
        self._every_alert = "alert" in wanted
        if notified and not self._every_alert:
            wanted = (*wanted, "alert")
        for type_name in wanted:
            found = exporters.get(type_name)
            if found is not None:  # a plugin's type whose exporter is not loaded: nothing
                by_source.setdefault(found.source, []).append(found)
        self._by_source = {source: tuple(found) for source, found in by_source.items()}
        self._batch = min(config.batch, sink.max_batch or config.batch)
        self._pending: list[Exported] = []
        self._failing = False
        self.subscription: Subscription | None = None

    @property
    def sources(self) -> tuple[type, ...]:
        return tuple(self._by_source)

    def subscribe(self, bus: EventBus) -> None:
        if not self._by_source:
            return  # it wants only types nothing exports yet
        self.subscription = bus.subscribe(
            self.handle,
            kinds=self.sources,
            max_queue=self.config.max_queue,
            name=f"sink:{self.name}",
        )

    async def handle(self, event: Any) -> None:
        if isinstance(event, AlertChanged) and not self._every_alert and event.notify != self.name:
            return  # another sink's alert
        for found in self._by_source.get(type(event), ()):
            exported = export(found, event)
            if exported is not None:
                exported.data = _redacted(exported.data, self._redactor())
                self._pending.append(exported)
        waiting = len(self.subscription.queue) if self.subscription is not None else 0
        if self._pending and (waiting == 0 or len(self._pending) >= self._batch):
            await self.flush()

    async def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._batch], self._pending[self._batch :]
            await self._deliver(batch)

    async def _deliver(self, batch: list[Exported]) -> None:
        config = self.config
        delay = config.backoff
        for attempt in range(config.retries + 1):
            try:
                await asyncio.wait_for(self.sink.send(batch), config.timeout)
            except Exception as exc:  # noqa: BLE001 - any failure of a sink is the sink's
                self.counts.errors += 1
                cause = _describe(exc, self._redactor())
                if attempt == config.retries:
                    self.counts.failed += len(batch)
                    self._announce_failing(cause)
                    raise DeliveryFailed(
                        f"sink {self.name}: {len(batch)} event(s) dropped after"
                        f" {config.retries + 1} tries: {cause}"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, config.max_backoff)
            else:
                self.counts.delivered += len(batch)
                if self._failing:
                    self._failing = False
                    log.info("event sink %s delivers again", self.name)
                return

    def _announce_failing(self, cause: str) -> None:
        """Logged once when a sink starts failing (and once when it recovers), not per batch."""
        if not self._failing:
            self._failing = True
            log.warning("event sink %s is failing, events are dropped: %s", self.name, cause)

    def stats(self) -> dict[str, int]:
        subscription = self.subscription
        return {
            "delivered": self.counts.delivered,
            "failed": self.counts.failed,
            "dropped": subscription.dropped if subscription is not None else 0,
            "errors": self.counts.errors,
            "queued": len(self._pending) + (len(subscription.queue) if subscription else 0),
        }

    async def close(self) -> None:
        try:
            await self.sink.close()
        except Exception:  # closing a broken connection may fail too
            log.debug("closing sink %s failed", self.name, exc_info=True)


def _describe(exc: BaseException, redactor: SecretRedactor) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip()
    return redactor(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:300]


def _redacted(value: Any, redactor: SecretRedactor) -> Any:
    """No configured secret (nor a long fragment of one) in any text of an event: upstream
    error messages and reasons can echo a key back."""
    if not redactor:
        return value
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, dict):
        return {k: _redacted(v, redactor) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, redactor) for v in value]
    return value
