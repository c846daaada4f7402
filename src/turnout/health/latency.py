"""Latency statistics per model: time to first token and total, as an EWMA and as p50/p95
over recent samples, bucketed by prompt size (a 30k-token prompt is not slow, it is big)."""

from __future__ import annotations

from collections import deque
from statistics import quantiles
from typing import Any

_ALPHA = 0.2  # EWMA weight of the newest sample: reacts within ~5 samples
_SAMPLES = 128  # recent samples kept per bucket for percentiles
BUCKETS = ((1024, "<1k"), (8192, "1k-8k"), (32768, "8k-32k"), (float("inf"), ">32k"))


def bucket_for(prompt_tokens: int) -> str:
    for limit, name in BUCKETS:
        if prompt_tokens < limit:
            return name
    return BUCKETS[-1][1]


class Series:
    """One measure (TTFT or total) in one bucket."""

    __slots__ = ("ewma", "samples")

    def __init__(self) -> None:
        self.ewma: float | None = None
        self.samples: deque[float] = deque(maxlen=_SAMPLES)

    def add(self, value: float) -> None:
        self.ewma = value if self.ewma is None else self.ewma + _ALPHA * (value - self.ewma)
        self.samples.append(value)

    def percentile(self, pct: int) -> float | None:
        if not self.samples:
            return None
        if len(self.samples) == 1:
            return self.samples[0]
        return quantiles(self.samples, n=100, method="inclusive")[pct - 1]

    def summary(self) -> dict[str, float | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 2)

        return {
            "ewma_ms": ms(self.ewma),
            "p50_ms": ms(self.percentile(50)),
            "p95_ms": ms(self.percentile(95)),
            "samples": len(self.samples),
        }


class LatencyStats:
    def __init__(self) -> None:
        self.ttft: dict[str, Series] = {}
        self.total: dict[str, Series] = {}
        self.all_ttft = Series()
        self.all_total = Series()

    def add(self, prompt_tokens: int, total: float, ttft: float | None) -> None:
        bucket = bucket_for(prompt_tokens)
        series = self.total.get(bucket)
        if series is None:
            series = self.total[bucket] = Series()
        series.add(total)
        self.all_total.add(total)
        if ttft is not None:
            series = self.ttft.get(bucket)
            if series is None:
                series = self.ttft[bucket] = Series()
            series.add(ttft)
            self.all_ttft.add(ttft)

    def ttft_p50(self, prompt_tokens: int | None = None) -> float | None:
        """What routing policies ask: the typical TTFT, for this prompt size when known."""
        if prompt_tokens is not None:
            series = self.ttft.get(bucket_for(prompt_tokens))
            if series is not None and series.samples:
                return series.percentile(50)
        return self.all_ttft.percentile(50)

    def speed_p50(self, prompt_tokens: int | None = None) -> float | None:
        """TTFT p50 where streams measured it, else total latency p50 (non-streaming
        traffic has no first token to time)."""
        ttft = self.ttft_p50(prompt_tokens)
        if ttft is not None:
            return ttft
        if prompt_tokens is not None:
            series = self.total.get(bucket_for(prompt_tokens))
            if series is not None and series.samples:
                return series.percentile(50)
        return self.all_total.percentile(50)

    def summary(self) -> dict[str, Any]:
        return {
            "ttft": self.all_ttft.summary(),
            "total": self.all_total.summary(),
            "by_prompt_size": {
                bucket: {
                    "ttft": self.ttft[bucket].summary() if bucket in self.ttft else None,
                    "total": self.total[bucket].summary(),
                }
                for _, bucket in BUCKETS
                if bucket in self.total
            },
        }
