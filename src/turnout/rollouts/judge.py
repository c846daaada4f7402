"""Judging a candidate against its objectives: pure arithmetic on two windows of outcomes.

A rate objective (errors, invalid output) is breached *plainly* when the candidate's
failures are too many to be bad luck at the objective's own rate: the exact binomial tail
P(X >= failures | requests, objective) falls below ALPHA. This is asked after every one of
the candidate's outcomes, so a candidate that is plainly failing is rolled back long before
its stage's `min_requests` (two failures in its first two requests against a 2% objective
already are). ALPHA is strict because the question is asked again and again: a candidate
exactly at its objective is rolled back by chance in well under 1% of stages.

At `min_requests` the stage is judged whole: rates by their observed value, and the
candidate's p95 time to first token and latency against the route's primary's over the
same window (when both have enough samples to have a p95, and the candidate is slower by
more than MIN_SLOWER: a ratio of two tiny figures is noise)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from turnout.config.rollout import SLO
from turnout.model import ErrorClass, Outcome
from turnout.model.errors import POLICY

ALPHA = 0.001
MIN_P95_SAMPLES = 20  # fewer, and a p95 is one or two outliers
# a ratio breach must also be this much slower, in seconds: 2 ms against 1 ms is twice as
# slow and means nothing
MIN_SLOWER = 0.05
_SAMPLES = 2000  # timings kept per window: bounded memory, recent enough


@dataclass(slots=True)
class Window:
    """One model's outcomes on a route since its stage began."""

    requests: int = 0
    errors: int = 0  # failures that count against the model's health (invalid output aside)
    invalid: int = 0  # answers that did not parse or match the schema
    ttft: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    latency: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))

    def add(self, outcome: Outcome) -> None:
        cls = outcome.error_class
        if cls is not None and not POLICY[cls].counts_against_health:
            return  # the client's own error, a rate limit: says nothing of the model's quality
        self.requests += 1
        if cls is ErrorClass.INVALID_OUTPUT:
            self.invalid += 1
        elif cls is not None:
            self.errors += 1
        elif outcome.ok:
            if outcome.ttft is not None:
                self.ttft.append(outcome.ttft)
            self.latency.append(outcome.latency)

    def figures(self) -> dict[str, Any]:
        n = self.requests
        return {
            "requests": n,
            "error_rate": round(self.errors / n, 4) if n else None,
            "invalid_output_rate": round(self.invalid / n, 4) if n else None,
            "ttft_p95_ms": _ms(p95(self.ttft)),
            "latency_p95_ms": _ms(p95(self.latency)),
        }

    def to_json(self, samples: int = _SAMPLES) -> dict[str, Any]:
        """The counts, and the last `samples` timings of each kind."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "invalid": self.invalid,
            "ttft": list(self.ttft)[-samples:],
            "latency": list(self.latency)[-samples:],
        }

    def merged(self, others: list[Window]) -> Window:
        """This window and other processes' windows of the same stage, as one."""
        if not others:
            return self
        total = Window(self.requests, self.errors, self.invalid)
        for window in (self, *others):
            if window is not self:
                total.requests += window.requests
                total.errors += window.errors
                total.invalid += window.invalid
            total.ttft.extend(window.ttft)
            total.latency.extend(window.latency)
        return total

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Window:
        window = cls(int(data["requests"]), int(data["errors"]), int(data["invalid"]))
        window.ttft.extend(float(v) for v in data.get("ttft", ()))
        window.latency.extend(float(v) for v in data.get("latency", ()))
        return window


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Literal["wait", "promote", "rollback"]
    objective: str | None = None  # the breached one, on a rollback
    observed: float | None = None
    limit: float | None = None


WAIT = Verdict("wait")


def judge(candidate: Window, primary: Window, slo: SLO, min_requests: int) -> Verdict:
    """What the candidate's window says now: roll back, promote (its stage is done), or wait."""
    n = candidate.requests
    rates = (
        ("error_rate", candidate.errors, slo.error_rate),
        ("invalid_output_rate", candidate.invalid, slo.invalid_output_rate),
    )
    for objective, failures, limit in rates:
        if failures and binomial_tail(failures, n, limit) < ALPHA:
            return Verdict("rollback", objective, round(failures / n, 4), limit)
    if n < min_requests:
        return WAIT
    for objective, failures, limit in rates:
        if failures / n > limit:
            return Verdict("rollback", objective, round(failures / n, 4), limit)
    ratios = (
        ("ttft_p95_ratio", candidate.ttft, primary.ttft, slo.ttft_p95_ratio),
        ("latency_p95_ratio", candidate.latency, primary.latency, slo.latency_p95_ratio),
    )
    for objective, mine, theirs, limit in ratios:
        if len(mine) < MIN_P95_SAMPLES or len(theirs) < MIN_P95_SAMPLES:
            continue
        ours, base = p95(mine), p95(theirs)
        if ours is not None and base and ours / base > limit and ours - base > MIN_SLOWER:
            return Verdict("rollback", objective, round(ours / base, 3), limit)
    return Verdict("promote")


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how likely k or more failures in n are by chance
    (1.0 when k is no more than the mean n*p: that is never a breach, and not worth summing)."""
    if k <= n * p:
        return 1.0
    if p <= 0 or k > n:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k, n + 1):
        term = math.exp(
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * log_p
            + (n - i) * log_q
        )
        total += term
        if term < total * 1e-12:
            break  # the terms only shrink from here (k is past the mean): the rest is noise
    return min(total, 1.0)


def p95(values: deque[float] | list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
