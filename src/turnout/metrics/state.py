"""The metrics read at scrape time, not counted per request: each model's breaker and
rate-limit headroom (health), the ledger writer's queue, the event bus's dropped events.

`StateCollector` is a prometheus_client custom collector: a scrape asks it, it reads the
services' state then and there. With several worker processes one scrape must show every
worker's state, and a collector sees only its own process: `Mirror` copies the collector's
figures into prometheus_client's per-process files (every second, and right before a scrape),
where the scraping worker reads them all. Each gauge says how the workers' values combine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from turnout import clock
from turnout.health import HealthEngine
from turnout.health.breaker import BreakerState

# the breaker as a number, so that max() over workers is the worst view and alerts can
# say `turnout_breaker_state > 0`
BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}

# how the workers' values of a gauge combine in one scrape (prometheus_client's modes; the
# `live` ones forget a worker when it exits)
WORKER_MODES = {
    "turnout_breaker_state": "livemax",  # open in any worker's view is open
    "turnout_ratelimit_remaining": "livemin",  # the least headroom any worker was told of
    "turnout_ratelimit_limit": "livemax",
    "turnout_ledger_queue_depth": "livesum",  # rows queued in all workers
}


class StateCollector(Collector):
    def __init__(
        self,
        health: HealthEngine,
        ledger_stats: Callable[[], dict[str, int] | None],
        bus_stats: Callable[[], dict[str, Any]],
    ) -> None:
        self.health = health
        self.ledger_stats = ledger_stats
        self.bus_stats = bus_stats

    def collect(self) -> Iterator[Metric]:
        yield from self._health(clock.now())
        yield from self._ledger()
        yield from self._events()

    def _health(self, now: float) -> Iterator[Metric]:
        breaker = GaugeMetricFamily(
            "turnout_breaker_state",
            "Each model's circuit breaker: 0 closed, 1 half-open, 2 open.",
            labels=["model", "provider"],
        )
        remaining = GaugeMetricFamily(
            "turnout_ratelimit_remaining",
            "Rate-limit headroom per model, from the provider's last response headers:"
            " requests or tokens left in the window (its limit once the window has reset).",
            labels=["model", "kind"],
        )
        limit = GaugeMetricFamily(
            "turnout_ratelimit_limit",
            "The provider's rate limit per model and window kind, from its last headers.",
            labels=["model", "kind"],
        )
        for name, health in list(self.health.models.items()):
            breaker.add_metric([name, health.provider], BREAKER_VALUES[health.breaker.state])
            for window in health.limits.windows:
                left = window.remaining
                if window.reset_at is not None and window.reset_at <= now and window.limit:
                    left = window.limit  # the window has reset since the headers came
                if left is not None:
                    remaining.add_metric([name, window.kind], left)
                if window.limit is not None:
                    limit.add_metric([name, window.kind], window.limit)
        yield from (breaker, remaining, limit)

    def _ledger(self) -> Iterator[Metric]:
        stats = self.ledger_stats() or {}
        yield GaugeMetricFamily(
            "turnout_ledger_queue_depth",
            "Ledger rows recorded but not yet written to the database.",
            value=stats.get("queued", 0),
        )
        yield CounterMetricFamily(
            "turnout_ledger_dropped_rows",
            "Ledger rows lost (queue full, unwritable, or a dead database at shutdown).",
            value=stats.get("dropped", 0),
        )

    def _events(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            "turnout_events_dropped",
            "Events a subscriber's full queue had no room for (never a slowed request).",
            labels=["subscriber"],
        )
        errors = CounterMetricFamily(
            "turnout_events_subscriber_errors",
            "Events whose subscriber raised (counted and logged, never seen by a request).",
            labels=["subscriber"],
        )
        for name, stats in self.bus_stats()["subscribers"].items():
            dropped.add_metric([name], stats["dropped"])
            errors.add_metric([name], stats["errors"])
        yield from (dropped, errors)


class Mirror:
    """The collector's figures as this process's multiprocess values: gauges set to the
    current value, counters raised by what they grew since the last copy."""

    def __init__(self, collector: StateCollector, registry: CollectorRegistry) -> None:
        self.collector = collector
        self.registry = registry
        self._gauges: dict[str, Gauge] = {}
        self._counters: dict[str, Counter] = {}
        self._seen: dict[tuple[str, tuple[str, ...]], float] = {}

    def refresh(self) -> None:
        for family in self.collector.collect():
            if not family.samples:
                continue  # made with its first sample, which tells its label names
            if family.type == "gauge":
                gauge = self._gauge(family)
                for sample in family.samples:
                    _child(gauge, sample.labels).set(sample.value)
            elif family.type == "counter":
                counter = self._counter(family)
                for sample in family.samples:
                    if not sample.name.endswith("_total"):
                        continue
                    key = (family.name, tuple(sample.labels.values()))
                    grown = sample.value - self._seen.get(key, 0.0)
                    self._seen[key] = sample.value
                    child = _child(counter, sample.labels)  # shown from the first copy
                    if grown > 0:
                        child.inc(grown)

    def _gauge(self, family: Metric) -> Gauge:
        gauge = self._gauges.get(family.name)
        if gauge is None:
            labels = _label_names(family)
            mode = WORKER_MODES.get(family.name, "livesum")
            gauge = Gauge(
                family.name,
                family.documentation,
                labels,
                registry=self.registry,
                multiprocess_mode=mode,  # type: ignore[arg-type]
            )
            self._gauges[family.name] = gauge
        return gauge

    def _counter(self, family: Metric) -> Counter:
        counter = self._counters.get(family.name)
        if counter is None:
            labels = _label_names(family)
            counter = Counter(family.name, family.documentation, labels, registry=self.registry)
            self._counters[family.name] = counter
        return counter


def _label_names(family: Metric) -> list[str]:
    return list(family.samples[0].labels)


def _child(metric: Any, labels: dict[str, str]) -> Any:
    return metric.labels(**labels) if labels else metric
