"""The request metrics of a single-process gateway as plain Python numbers, turned into
Prometheus families only when scraped.

Per request the recorder (recorder.py) adds to a few ints and floats: a histogram child is a
list of per-bucket counts and a sum, its bucket found by one `bisect`: about 1.6 µs a request
in a loop on this VM, where prometheus_client's own children (a lock and a method call per
counter, bucket and sum) took 8 µs, 5% of the gateway's requests/s at c=8. A scrape
(`Tallies.collect`) makes the cumulative buckets and the families with the names, help,
labels and child order prometheus_client's Histogram, Counter and Gauge gave, so the
exposition is the same text. Everything runs on the event loop's thread: no locks.

With several worker processes every figure must be in prometheus_client's shared files at
once (any worker may be scraped right after a request to another), so that mode keeps the
library's children (recorder.ChildRecorder).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from turnout.metrics.names import (
    DURATION_BUCKETS,
    GEN_AI_LABELS,
    HELP,
    NONE,
    OPERATION,
    TOKEN_BUCKETS,
    TTFT_BUCKETS,
)

__all__ = ["Answered", "Series", "Tallies", "bisect_left"]

# the bounds a value is bisected into: +Inf last, as prometheus_client's Histogram adds it
DURATION_BOUNDS = (*map(float, DURATION_BUCKETS), float("inf"))
TOKEN_BOUNDS = (*map(float, TOKEN_BUCKETS), float("inf"))
TTFT_BOUNDS = (*map(float, TTFT_BUCKETS), float("inf"))

SeriesKey = tuple[str, str | None, str | None, str]  # route, model, provider, outcome
FallbackKey = tuple[str, str, str, str]  # route, from_model, to_model, reason
Labels = tuple[str, ...]


class Count:
    """One counter or gauge child."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class Buckets:
    """One histogram child: each bucket's own count (cumulated when scraped) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.counts = [0] * len(bounds)
        self.total = 0.0


class Answered:
    """The children only an answered request adds to: tokens, TTFT, cost and savings."""

    __slots__ = ("cost", "input", "output", "savings", "ttft")

    def __init__(self, tallies: Tallies, route: str, model: str, gen_ai: Labels) -> None:
        self.input = _histogram(tallies.tokens, (*gen_ai, "input"), TOKEN_BOUNDS)
        self.output = _histogram(tallies.tokens, (*gen_ai, "output"), TOKEN_BOUNDS)
        self.cost = _count(tallies.cost, (route, model))
        self.savings = _count(tallies.savings, (route, model))
        self.ttft = _histogram(tallies.ttfts, gen_ai, TTFT_BOUNDS)


class Series:
    """The children one (route, model, provider, outcome) adds to, found once. Several
    series share a child where its labels are not the whole key (the requests counter has no
    provider, cost no outcome). `answered` is None for a request nothing answered."""

    __slots__ = ("answered", "duration", "requests")

    def __init__(self, tallies: Tallies, key: SeriesKey) -> None:
        route, model, provider, outcome = key
        gen_ai = (OPERATION, provider or "", route, model or "")
        self.requests = _count(tallies.requests, (route, model or NONE, outcome))
        error_type = "" if outcome == "ok" else outcome
        self.duration = _histogram(tallies.durations, (*gen_ai, error_type), DURATION_BOUNDS)
        # created in the order prometheus_client's children were: the scrape lists them so
        self.answered = None if model is None else Answered(tallies, route, model, gen_ai)


def _count(children: dict[Labels, Count], labels: Labels) -> Count:
    found = children.get(labels)
    if found is None:
        found = children[labels] = Count()
    return found


def _histogram(
    children: dict[Labels, Buckets], labels: Labels, bounds: tuple[float, ...]
) -> Buckets:
    found = children.get(labels)
    if found is None:
        found = children[labels] = Buckets(bounds)
    return found


class Tallies(Collector):
    """Every child by its label values, in the order each was first used (the order a
    scrape lists them in); `series` and `fallbacks` are what the recorder adds to."""

    def __init__(self) -> None:
        self.series: dict[SeriesKey, Series] = {}
        self.fallbacks: dict[FallbackKey, float] = {}
        self.requests: dict[Labels, Count] = {}
        self.durations: dict[Labels, Buckets] = {}
        self.tokens: dict[Labels, Buckets] = {}
        self.ttfts: dict[Labels, Buckets] = {}
        self.cost: dict[Labels, Count] = {}
        self.savings: dict[Labels, Count] = {}

    def new_series(self, key: SeriesKey) -> Series:
        series = self.series[key] = Series(self, key)
        return series

    def collect(self) -> Iterator[Metric]:
        """The families, in the order (and with the help) prometheus_client's metrics were
        registered in: the same exposition text."""
        gen_ai = list(GEN_AI_LABELS)
        tokens = HistogramMetricFamily(
            "gen_ai_client_token_usage", HELP["tokens"], labels=[*gen_ai, "gen_ai_token_type"]
        )
        _add_histograms(tokens, self.tokens, TOKEN_BOUNDS)
        yield tokens
        duration = HistogramMetricFamily(
            "gen_ai_client_operation_duration_seconds",
            HELP["duration"],
            labels=[*gen_ai, "error_type"],
        )
        _add_histograms(duration, self.durations, DURATION_BOUNDS)
        yield duration
        ttft = HistogramMetricFamily(
            "gen_ai_server_time_to_first_token_seconds", HELP["ttft"], labels=gen_ai
        )
        _add_histograms(ttft, self.ttfts, TTFT_BOUNDS)
        yield ttft
        requests = CounterMetricFamily(
            "turnout_requests", HELP["requests"], labels=["route", "model", "outcome"]
        )
        for labels, count in list(self.requests.items()):
            requests.add_metric(labels, count.value)
        yield requests
        fallbacks = CounterMetricFamily(
            "turnout_fallbacks",
            HELP["fallbacks"],
            labels=["route", "from_model", "to_model", "reason"],
        )
        for labels, value in list(self.fallbacks.items()):
            fallbacks.add_metric(labels, value)
        yield fallbacks
        cost = CounterMetricFamily("turnout_cost_usd", HELP["cost"], labels=["route", "model"])
        for labels, count in list(self.cost.items()):
            cost.add_metric(labels, count.value)
        yield cost
        savings = GaugeMetricFamily(
            "turnout_savings_usd", HELP["savings"], labels=["route", "model"]
        )
        for labels, count in list(self.savings.items()):
            savings.add_metric(labels, count.value)
        yield savings


def _add_histograms(
    family: HistogramMetricFamily, children: dict[Labels, Buckets], bounds: tuple[float, ...]
) -> None:
    """Each child's counts made cumulative, `le` written as Prometheus writes it
    (prometheus_client's floatToGoString: `0.01`, `1.0`, `+Inf`)."""
    les = [floatToGoString(bound) for bound in bounds]
    for labels, child in list(children.items()):
        buckets, running = [], 0
        for le, count in zip(les, child.counts, strict=True):
            running += count
            buckets.append((le, running))
        family.add_metric(labels, buckets, child.total)
