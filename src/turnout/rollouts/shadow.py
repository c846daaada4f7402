"""Shadow mode: the candidate gets a copy of a share of the route's requests after the route
has answered, and each pair of answers is compared. The client never waits for the copy and
never sees it; the copy's spend has a daily cap and is never charged to the client's key.

What is compared, per pair: whether the candidate's answer passed the output guard (JSON that
parses and matches the schema), its latency against the answer the client got, tokens and
cost, and agreement: for JSON, the share of the top-level keys both answers give the same
value; for text, the overlap of their words (Jaccard), a cheap similarity."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from turnout.config.rollout import RolloutConfig
from turnout.rollouts.judge import p95

_WORDS = re.compile(r"\w+")
_SAMPLES = 1000
_DAY = 86400


@dataclass(slots=True)
class Pair:
    """The client's answer and the candidate's copy of the same request."""

    json_mode: bool
    primary_text: str | None
    primary_latency: float
    primary_cost: float
    candidate_text: str | None  # None when the candidate failed
    candidate_latency: float
    candidate_cost: float
    candidate_failure: str | None = None  # why it failed (invalid_output(json), timeout...)
    invalid: bool = False  # the failure was its output (the guard refused it)


@dataclass(slots=True)
class ShadowStats:
    pairs: int = 0
    errors: int = 0
    invalid: int = 0
    agreement_sum: float = 0.0
    agreement_pairs: int = 0
    primary_cost_usd: float = 0.0
    candidate_cost_usd: float = 0.0
    day: int = 0  # the UTC day `spent_today_usd` counts (days since the epoch)
    spent_today_usd: float = 0.0
    capped: int = 0  # copies not sent: the day's cap was reached
    busy: int = 0  # copies not sent: too many were in flight (gateway/shadow.py)
    latency_ratios: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))

    def under_cap(self, cap_usd: float, now: float) -> bool:
        today = int(now // _DAY)
        if today != self.day:
            self.day, self.spent_today_usd = today, 0.0
        if self.spent_today_usd >= cap_usd:
            self.capped += 1
            return False
        return True

    def add(self, pair: Pair, now: float) -> None:
        self.pairs += 1
        self.primary_cost_usd += pair.primary_cost
        self.candidate_cost_usd += pair.candidate_cost
        if int(now // _DAY) == self.day:
            self.spent_today_usd += pair.candidate_cost
        if pair.candidate_text is None:
            if pair.invalid:
                self.invalid += 1
            else:
                self.errors += 1
            return
        if pair.primary_latency > 0:
            self.latency_ratios.append(pair.candidate_latency / pair.primary_latency)
        if pair.primary_text is not None:
            self.agreement_sum += agreement(pair.primary_text, pair.candidate_text, pair.json_mode)
            self.agreement_pairs += 1

    def report(self, config: RolloutConfig) -> dict[str, Any]:
        """The comparison so far, with a flag for each objective the candidate misses."""
        n = self.pairs
        error_rate = self.errors / n if n else None
        invalid_rate = self.invalid / n if n else None
        ratio = p95(self.latency_ratios)
        slo = config.slo
        flags = []
        if invalid_rate is not None and invalid_rate > slo.invalid_output_rate:
            flags.append(f"invalid_output_rate {invalid_rate:.3f} > {slo.invalid_output_rate}")
        if error_rate is not None and error_rate > slo.error_rate:
            flags.append(f"error_rate {error_rate:.3f} > {slo.error_rate}")
        if ratio is not None and ratio > slo.latency_p95_ratio:
            flags.append(f"latency_p95_ratio {ratio:.2f} > {slo.latency_p95_ratio}")
        return {
            "pairs": n,
            "error_rate": _round(error_rate),
            "invalid_output_rate": _round(invalid_rate),
            "agreement": _round(self.agreement_sum / self.agreement_pairs)
            if self.agreement_pairs
            else None,
            "latency_p95_ratio": _round(ratio),
            "primary_cost_usd": round(self.primary_cost_usd, 8),
            "candidate_cost_usd": round(self.candidate_cost_usd, 8),
            "spent_today_usd": round(self.spent_today_usd, 8),
            "daily_cap_usd": config.daily_cap_usd,
            "capped": self.capped,
            "busy": self.busy,
            "flags": flags,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "errors": self.errors,
            "invalid": self.invalid,
            "agreement_sum": self.agreement_sum,
            "agreement_pairs": self.agreement_pairs,
            "primary_cost_usd": self.primary_cost_usd,
            "candidate_cost_usd": self.candidate_cost_usd,
            "day": self.day,
            "spent_today_usd": self.spent_today_usd,
            "capped": self.capped,
            "busy": self.busy,
            "latency_ratios": list(self.latency_ratios),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShadowStats:
        stats = cls(**{k: v for k, v in data.items() if k != "latency_ratios"})
        stats.latency_ratios.extend(float(v) for v in data.get("latency_ratios", ()))
        return stats


def agreement(primary: str, candidate: str, json_mode: bool) -> float:
    """1.0 for the same answer, 0.0 for nothing in common."""
    if json_mode:
        try:
            a, b = orjson.loads(primary), orjson.loads(candidate)
        except orjson.JSONDecodeError:
            return 0.0
        if isinstance(a, dict) and isinstance(b, dict):
            keys = a.keys() | b.keys()
            return sum(1 for k in keys if a.get(k) == b.get(k)) / len(keys) if keys else 1.0
        return 1.0 if a == b else 0.0
    words_a = set(_WORDS.findall(primary.lower()))
    words_b = set(_WORDS.findall(candidate.lower()))
    union = words_a | words_b
    return len(words_a & words_b) / len(union) if union else 1.0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
