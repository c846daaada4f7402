"""The metrics the event bus feeds: one inline subscriber to RequestFinished.

It runs inside `publish`, on every request's path, so it does only counter and histogram
updates. In one process (`TallyRecorder`) those are plain Python numbers (tallies.py) that a
scrape turns into families. With `--workers N` (`ChildRecorder`) every figure must be in
prometheus_client's shared files at once, so it updates that library's bound children, looked
up once per distinct series (a dict of them). Both name their series alike (`Labels`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# no `*_created` series beside every counter and histogram: they double a scrape's size, and
# Prometheus reads a counter's resets from its values
disable_created_metrics()

from turnout.config.schema import Config
from turnout.events import RequestFinished
from turnout.metrics.names import (
    DURATION_BUCKETS,
    GEN_AI_LABELS,
    HELP,
    NONE,
    OPERATION,
    TOKEN_BUCKETS,
    TTFT_BUCKETS,
    UNKNOWN,
    reason_class,
)
from turnout.metrics.tallies import (
    DURATION_BOUNDS,
    TOKEN_BOUNDS,
    TTFT_BOUNDS,
    FallbackKey,
    SeriesKey,
    Tallies,
    bisect_left,
)


class Labels:
    """What both recorders share: the route label (a configured route or model, else
    `unknown`) and the fallback counter's labels. `config` returns the config now serving:
    its routes and models are the route label's values (a reload adds its own)."""

    def __init__(self, config: Callable[[], Config]) -> None:
        self._config = config
        self._seen: Config | None = None
        self._names: frozenset[str] = frozenset()

    def _route(self, asked: str) -> str:
        config = self._config()
        if config is not self._seen:  # the first request, or the first after a reload
            self._seen = config
            self._names = frozenset(config.routes) | frozenset(config.models)
        return asked if asked in self._names else UNKNOWN

    def _fallback_keys(
        self, route: str, to: str, attempts: list[dict[str, Any]]
    ) -> Iterator[FallbackKey]:
        names = self._names
        for attempt in attempts:
            source = attempt.get("model")
            if isinstance(source, str) and source not in names:
                source = source.partition("@")[0]  # a deployment's key: `MODEL@DEPLOYMENT`
            yield (
                route,
                source if source in names else UNKNOWN,
                to,
                reason_class(attempt.get("reason")),
            )


class TallyRecorder(Labels):
    """One process's recorder: a request adds to its series' children in `tallies`, which
    (registered on the registry) makes the families when scraped."""

    def __init__(self, config: Callable[[], Config]) -> None:
        super().__init__(config)
        self.tallies = Tallies()

    def on_request(self, event: RequestFinished) -> None:
        row = event.row
        key = (self._route(row.route), row.model, row.provider, row.outcome)
        tallies = self.tallies
        series = tallies.series.get(key)
        if series is None:
            series = tallies.new_series(key)
        series.requests.value += 1
        # a value's bucket is the first bound at or above it, as in prometheus_client
        seconds = row.latency_ms / 1000
        child = series.duration
        child.counts[bisect_left(DURATION_BOUNDS, seconds)] += 1
        child.total += seconds
        answered = series.answered
        if answered is not None:  # a request nothing answered has no tokens, cost or TTFT
            child, tokens = answered.input, row.prompt_tokens
            child.counts[bisect_left(TOKEN_BOUNDS, tokens)] += 1
            child.total += tokens
            child, tokens = answered.output, row.completion_tokens
            child.counts[bisect_left(TOKEN_BOUNDS, tokens)] += 1
            child.total += tokens
            answered.cost.value += row.cost_usd
            answered.savings.value += row.baseline_cost_usd - row.cost_usd
            if row.ttft_ms is not None:  # a streamed answer
                seconds, child = row.ttft_ms / 1000, answered.ttft
                child.counts[bisect_left(TTFT_BOUNDS, seconds)] += 1
                child.total += seconds
        if row.attempts:
            fallbacks = tallies.fallbacks
            for fell in self._fallback_keys(key[0], row.model or NONE, row.attempts):
                fallbacks[fell] = fallbacks.get(fell, 0.0) + 1


class Instruments:
    """The request metrics as prometheus_client metrics, on `registry` (in multiprocess
    mode, in this process's files): the worker processes' recorder."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            HELP["tokens"],
            [*GEN_AI_LABELS, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            HELP["duration"],
            [*GEN_AI_LABELS, "error_type"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            HELP["ttft"],
            list(GEN_AI_LABELS),
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "turnout_requests", HELP["requests"], ["route", "model", "outcome"], registry=registry
        )
        self.fallbacks = Counter(
            "turnout_fallbacks",
            HELP["fallbacks"],
            ["route", "from_model", "to_model", "reason"],
            registry=registry,
        )
        self.cost = Counter("turnout_cost_usd", HELP["cost"], ["route", "model"], registry=registry)
        # a gauge: an answer from a model dearer than the route's baseline saves less than
        # nothing, and a counter cannot go down ("sum": every worker's, dead ones' included)
        self.savings = Gauge(
            "turnout_savings_usd",
            HELP["savings"],
            ["route", "model"],
            registry=registry,
            multiprocess_mode="sum",
        )


class _Series:
    """The bound children of one (route, model, provider, outcome): found once, then reused."""

    __slots__ = ("cost", "duration", "input", "output", "requests", "savings", "ttft")

    def __init__(
        self, m: Instruments, route: str, model: str | None, provider: str | None, outcome: str
    ) -> None:
        answered = model or ""
        gen_ai = (OPERATION, provider or "", route, answered)
        self.requests = m.requests.labels(route, model or NONE, outcome)
        self.duration = m.duration.labels(*gen_ai, "" if outcome == "ok" else outcome)
        # a request nothing answered has no tokens, cost or savings to count
        self.input: Any = None
        self.output: Any = None
        self.cost: Any = None
        self.savings: Any = None
        self.ttft: Any = None
        if model is not None:
            self.input = m.tokens.labels(*gen_ai, "input")
            self.output = m.tokens.labels(*gen_ai, "output")
            self.cost = m.cost.labels(route, model)
            self.savings = m.savings.labels(route, model)
            self.ttft = m.ttft.labels(*gen_ai)


class ChildRecorder(Labels):
    """The recorder of `turnout serve --workers N`: prometheus_client's children of
    `instruments` (in multiprocess mode each update lands in this process's shared file)."""

    def __init__(self, instruments: Instruments, config: Callable[[], Config]) -> None:
        super().__init__(config)
        self.m = instruments
        self._series: dict[SeriesKey, _Series] = {}
        self._fallbacks: dict[FallbackKey, Any] = {}

    def on_request(self, event: RequestFinished) -> None:
        row = event.row
        route, model = self._route(row.route), row.model
        key = (route, model, row.provider, row.outcome)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self.m, *key)
        series.requests.inc()
        series.duration.observe(row.latency_ms / 1000)
        if series.input is not None:
            series.input.observe(row.prompt_tokens)
            series.output.observe(row.completion_tokens)
            series.cost.inc(row.cost_usd)
            series.savings.inc(row.baseline_cost_usd - row.cost_usd)
            if row.ttft_ms is not None:  # a streamed answer
                series.ttft.observe(row.ttft_ms / 1000)
        if row.attempts:
            for fell in self._fallback_keys(route, model or NONE, row.attempts):
                child = self._fallbacks.get(fell)
                if child is None:
                    child = self._fallbacks[fell] = self.m.fallbacks.labels(*fell)
                child.inc()
