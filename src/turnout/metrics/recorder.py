"""The metrics the event bus feeds: one inline subscriber to RequestFinished.

It runs inside `publish`, on every request's path, so it does only counter and histogram
updates: the label values are looked up once per distinct series (a dict of bound children),
after which a request costs a handful of increments and no allocation beyond the lookup key.
"""

from __future__ import annotations

from collections.abc import Callable
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
    NONE,
    OPERATION,
    TOKEN_BUCKETS,
    TTFT_BUCKETS,
    UNKNOWN,
    reason_class,
)


class Instruments:
    """The request metrics, on `registry` (and, in multiprocess mode, in this process's files)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used (billable tokens, as priced).",
            [*GEN_AI_LABELS, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration: a client request from its arrival to its end, failovers"
            " included.",
            [*GEN_AI_LABELS, "error_type"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first token of a streamed answer, from the request's arrival (failed"
            " attempts before it included).",
            list(GEN_AI_LABELS),
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "turnout_requests",
            "Client requests by route, answering model and outcome.",
            ["route", "model", "outcome"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "turnout_fallbacks",
            "Targets passed over (failed or skipped) before the answering one: from_model was"
            " not used, to_model answered (`none`: nothing did).",
            ["route", "from_model", "to_model", "reason"],
            registry=registry,
        )
        self.cost = Counter(
            "turnout_cost_usd",
            "What the answers cost, in USD, at the configured prices.",
            ["route", "model"],
            registry=registry,
        )
        # a gauge: an answer from a model dearer than the route's baseline saves less than
        # nothing, and a counter cannot go down ("sum": every worker's, dead ones' included)
        self.savings = Gauge(
            "turnout_savings_usd",
            "Baseline cost less actual cost, in USD, summed since the gateway started"
            " (negative when dearer models answered).",
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


class Recorder:
    """Subscribe `on_request` inline to RequestFinished. `config` returns the config now
    serving: its routes and models are the route label's values (a reload adds its own)."""

    def __init__(self, instruments: Instruments, config: Callable[[], Config]) -> None:
        self.m = instruments
        self._config = config
        self._seen: Config | None = None
        self._names: frozenset[str] = frozenset()
        self._series: dict[tuple[str, str | None, str | None, str], _Series] = {}
        self._fallbacks: dict[tuple[str, str, str, str], Any] = {}

    def _route(self, asked: str) -> str:
        config = self._config()
        if config is not self._seen:  # the first request, or the first after a reload
            self._seen = config
            self._names = frozenset(config.routes) | frozenset(config.models)
        return asked if asked in self._names else UNKNOWN

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
            self._fell_back(route, model or NONE, row.attempts)

    def _fell_back(self, route: str, to: str, attempts: list[dict[str, Any]]) -> None:
        names = self._names
        for attempt in attempts:
            source = attempt.get("model")
            key = (
                route,
                source if source in names else UNKNOWN,
                to,
                reason_class(attempt.get("reason")),
            )
            child = self._fallbacks.get(key)
            if child is None:
                child = self._fallbacks[key] = self.m.fallbacks.labels(*key)
            child.inc()
