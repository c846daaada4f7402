"""The report figures, computed in Python from fetched ledger columns.

Both backends fetch the same columns (FACT_COLUMNS) and hand them here, so SQLite and
Postgres give identical figures for identical rows: sums are math.fsum (exactly rounded,
whatever order the rows arrive in) and percentiles use one formula (the same linear
interpolation as Postgres' percentile_cont).

Definitions, per group and for the totals:
- requests: ledger rows (one per client request) started at or after `since`.
- ok / stale / client_closed: rows with that outcome.
- errors: rows with outcome "error" or "stream_failed" (the client got no complete live
  answer because of the gateway or upstream; "stale" and "client_closed" are not errors).
- error_rate: errors / requests.
- fallbacks: ok rows with a non-empty `attempts` list. `attempts` holds only the targets
  tried or considered *before* the one that answered and that did not answer (failed, or
  skipped: breaker open, rate-limited, capability, context length, excluded), so a
  non-empty list means the answer came from a later target than the plan's first.
- fallback_rate: fallbacks / ok; None when there is no ok row.
- spend_usd, baseline_usd: sums of cost_usd and baseline_cost_usd; savings_usd is
  baseline_usd - spend_usd (negative when the route cost more than its baseline).
- provider_cost_usd: sum of provider_cost_usd over the rows that carry one (None when no
  row does); provider_cost_requests: how many rows carry one.
- prompt_tokens (including cached), cached_tokens, completion_tokens: sums.
- ttft_p50_ms / ttft_p95_ms: over rows with a ttft_ms (streams that got a first token).
- latency_p50_ms / latency_p95_ms: over every row (what every client waited, errors too).
  Percentiles are None for an empty set.
- cache_hits, cache_misses, cache_bypassed: rows of routes with a response cache, by their
  `cache` verdict (hits: `hit` and the semantic cache's `similar`); cache_hit_rate: hits / (hits + misses), None when the cache was never
  asked (bypassed requests chose not to ask it). cache_saved_usd: the sum of what the hits'
  answers cost when they were made, apart from savings_usd (routing's, against a baseline:
  a hit's cost and baseline are both 0, so it adds nothing there).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

# the order every backend's report query returns; `fallback` is computed in SQL (0/1)
FACT_COLUMNS = (
    "route",
    "model",
    "key_id",
    "outcome",
    "fallback",
    "cost_usd",
    "baseline_cost_usd",
    "provider_cost_usd",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "ttft_ms",
    "latency_ms",
    "cache",
    "cache_saved_usd",
)

DIMENSIONS = {"routes": "route", "models": "model", "keys": "key_id"}

FIGURES = (
    "requests",
    "ok",
    "errors",
    "stale",
    "client_closed",
    "error_rate",
    "fallbacks",
    "fallback_rate",
    "spend_usd",
    "baseline_usd",
    "savings_usd",
    "provider_cost_usd",
    "provider_cost_requests",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "cache_hits",
    "cache_misses",
    "cache_bypassed",
    "cache_hit_rate",
    "cache_saved_usd",
)

_ERROR_OUTCOMES = frozenset({"error", "stream_failed"})


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, as Postgres' percentile_cont(q)."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    lower = math.floor(position)
    upper = math.ceil(position)
    low, high = ordered[lower], ordered[upper]
    return low + (high - low) * (position - lower)


class _Group:
    __slots__ = (
        "baselines",
        "bypassed",
        "cache_saved",
        "cached",
        "client_closed",
        "completion",
        "costs",
        "errors",
        "fallbacks",
        "hits",
        "latencies",
        "misses",
        "ok",
        "prompt",
        "provider_costs",
        "requests",
        "stale",
        "ttfts",
    )  # fmt: skip

    def __init__(self) -> None:
        self.requests = self.ok = self.errors = self.stale = self.client_closed = 0
        self.fallbacks = self.prompt = self.cached = self.completion = 0
        self.costs: list[float] = []
        self.baselines: list[float] = []
        self.provider_costs: list[float] = []
        self.ttfts: list[float] = []
        self.latencies: list[float] = []
        self.hits = self.misses = self.bypassed = 0
        self.cache_saved: list[float] = []

    def add(self, fact: dict[str, Any]) -> None:
        self.requests += 1
        outcome = fact["outcome"]
        if outcome == "ok":
            self.ok += 1
            self.fallbacks += bool(fact["fallback"])
        elif outcome in _ERROR_OUTCOMES:
            self.errors += 1
        elif outcome == "stale":
            self.stale += 1
        elif outcome == "client_closed":
            self.client_closed += 1
        self.costs.append(fact["cost_usd"])
        self.baselines.append(fact["baseline_cost_usd"])
        if fact["provider_cost_usd"] is not None:
            self.provider_costs.append(fact["provider_cost_usd"])
        self.prompt += fact["prompt_tokens"]
        self.cached += fact["cached_tokens"]
        self.completion += fact["completion_tokens"]
        if fact["ttft_ms"] is not None:
            self.ttfts.append(fact["ttft_ms"])
        self.latencies.append(fact["latency_ms"])
        cache = fact["cache"]
        if cache == "hit" or cache == "similar":  # (similar: a semantic hit)
            self.hits += 1
            self.cache_saved.append(fact["cache_saved_usd"] or 0.0)
        elif cache == "miss":
            self.misses += 1
        elif cache == "bypass":
            self.bypassed += 1

    def figures(self) -> dict[str, Any]:
        spend = math.fsum(self.costs)
        baseline = math.fsum(self.baselines)
        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "stale": self.stale,
            "client_closed": self.client_closed,
            "error_rate": self.errors / self.requests if self.requests else None,
            "fallbacks": self.fallbacks,
            "fallback_rate": self.fallbacks / self.ok if self.ok else None,
            "spend_usd": spend,
            "baseline_usd": baseline,
            "savings_usd": baseline - spend,
            "provider_cost_usd": math.fsum(self.provider_costs) if self.provider_costs else None,
            "provider_cost_requests": len(self.provider_costs),
            "prompt_tokens": self.prompt,
            "cached_tokens": self.cached,
            "completion_tokens": self.completion,
            "ttft_p50_ms": percentile(self.ttfts, 0.5),
            "ttft_p95_ms": percentile(self.ttfts, 0.95),
            "latency_p50_ms": percentile(self.latencies, 0.5),
            "latency_p95_ms": percentile(self.latencies, 0.95),
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "cache_bypassed": self.bypassed,
            "cache_hit_rate": (
                self.hits / (self.hits + self.misses) if self.hits + self.misses else None
            ),
            "cache_saved_usd": math.fsum(self.cache_saved),
        }


def summarize(facts: Iterable[Sequence[Any]], since: float) -> dict[str, Any]:
    """{since, totals, routes, models, keys}: each dimension a list of {name, **figures},
    biggest spend first (then most requests, then name)."""
    totals = _Group()
    groups: dict[str, dict[Any, _Group]] = {dimension: {} for dimension in DIMENSIONS}
    for values in facts:
        fact = dict(zip(FACT_COLUMNS, values, strict=True))
        totals.add(fact)
        for dimension, column in DIMENSIONS.items():
            by_name = groups[dimension]
            name = fact[column]
            group = by_name.get(name)
            if group is None:
                group = by_name[name] = _Group()
            group.add(fact)
    report: dict[str, Any] = {"since": since, "totals": totals.figures()}
    for dimension, by_name in groups.items():
        rows = [{"name": name, **group.figures()} for name, group in by_name.items()]
        rows.sort(key=lambda r: (-r["spend_usd"], -r["requests"], r["name"] or ""))
        report[dimension] = rows
    return report
