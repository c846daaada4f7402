"""Derives each model's health from outcomes. Nothing else writes health state.

Today it records; the breaker, cooldowns and shared state build on the same outcomes.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from statistics import quantiles
from typing import Any

from turnout.model import ErrorClass, Outcome

log = logging.getLogger("turnout.health")

_WINDOW = 200  # recent attempts kept per model for error rate and latency figures


@dataclass
class ModelHealth:
    model: str
    provider: str
    requests: int = 0
    failures: int = 0
    last_error: dict[str, Any] | None = None
    last_ok_at: float | None = None
    recent: deque[tuple[bool, float, float | None]] = field(
        default_factory=lambda: deque(maxlen=_WINDOW)
    )  # (ok, latency, ttft)

    def latency_figures(self) -> dict[str, float | None]:
        latencies = [entry[1] for entry in self.recent if entry[0]]
        ttfts = [entry[2] for entry in self.recent if entry[0] and entry[2] is not None]
        return {
            "latency_p50_ms": _percentile_ms(latencies, 50),
            "latency_p95_ms": _percentile_ms(latencies, 95),
            "ttft_p50_ms": _percentile_ms(ttfts, 50),
            "ttft_p95_ms": _percentile_ms(ttfts, 95),
        }

    @property
    def error_rate(self) -> float:
        if not self.recent:
            return 0.0
        return sum(1 for entry in self.recent if not entry[0]) / len(self.recent)


def _percentile_ms(values: list[float], pct: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0] * 1000, 2)
    return round(quantiles(values, n=100, method="inclusive")[pct - 1] * 1000, 2)


class HealthTracker:
    def __init__(self) -> None:
        self.models: dict[str, ModelHealth] = {}
        # provider -> why it is misconfigured (a rejected key, a missing env var)
        self.misconfigured: dict[str, str] = {}

    def register(self, model: str, provider: str) -> None:
        self.models.setdefault(model, ModelHealth(model, provider))

    def mark_misconfigured(self, provider: str, reason: str) -> None:
        if self.misconfigured.get(provider) != reason:
            log.error("provider %s is misconfigured: %s", provider, reason)
        self.misconfigured[provider] = reason

    def record(self, outcome: Outcome) -> None:
        health = self.models.get(outcome.model)
        if health is None:
            health = self.models[outcome.model] = ModelHealth(outcome.model, outcome.provider)
        health.requests += 1
        health.recent.append((outcome.ok, outcome.latency, outcome.ttft))
        if outcome.ok:
            health.last_ok_at = outcome.started + outcome.latency
            if outcome.provider in self.misconfigured and not self._key_missing(outcome.provider):
                log.warning("provider %s answered again: no longer misconfigured", outcome.provider)
                del self.misconfigured[outcome.provider]
            return
        health.failures += 1
        health.last_error = {
            "class": outcome.error_class.value if outcome.error_class else None,
            "status": outcome.status,
            "message": outcome.message,
            "at": outcome.started,
        }
        if outcome.error_class is ErrorClass.AUTH:
            self.mark_misconfigured(
                outcome.provider,
                f"HTTP {outcome.status} from model {outcome.model}: {outcome.message}",
            )
        elif outcome.error_class is not ErrorClass.CLIENT_ERROR:
            log.warning(
                "model %s failed: %s (%s) %s",
                outcome.model,
                outcome.error_class.value if outcome.error_class else "error",
                outcome.status or "-",
                outcome.message or "",
            )

    def _key_missing(self, provider: str) -> bool:
        return self.misconfigured.get(provider, "").startswith("environment variable")

    def state(self, model: str) -> str:
        health = self.models.get(model)
        if health is None:
            return "unknown"
        if health.provider in self.misconfigured:
            return "misconfigured"
        if health.recent and not health.recent[-1][0]:
            return "failing"
        return "healthy"

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        models = {}
        for name, health in self.models.items():
            models[name] = {
                "provider": health.provider,
                "state": self.state(name),
                "requests": health.requests,
                "failures": health.failures,
                "error_rate": round(health.error_rate, 4),
                "last_error": health.last_error,
                "seconds_since_ok": round(now - health.last_ok_at, 3)
                if health.last_ok_at
                else None,
                **health.latency_figures(),
            }
        return {
            "models": models,
            "providers": {
                name: {"state": "misconfigured", "reason": reason}
                for name, reason in self.misconfigured.items()
            },
        }
