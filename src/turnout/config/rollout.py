"""A route's `rollout:` section: a candidate model tried on a growing share of the route's
requests, promoted stage by stage while it meets its objectives and rolled back the moment
it plainly breaks one.

schema.py imports this module for RouteConfig's `rollout:` field; the shared field types
come from fields.py."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import Field, field_validator

from turnout.config.fields import Strict


class SLO(Strict):
    """What the candidate must meet, judged on each stage's window."""

    error_rate: float = Field(0.02, ge=0, le=1)  # failures that count against health
    invalid_output_rate: float = Field(0.01, ge=0, le=1)  # JSON that does not parse or match
    # the candidate's p95 against the route's primary's, over the same window
    ttft_p95_ratio: float = Field(1.5, gt=0)
    latency_p95_ratio: float = Field(1.5, gt=0)


class RolloutConfig(Strict):
    candidate: str  # a model of `models:`; the route's targets stay behind it as fallback
    # canary: the candidate answers a growing share of requests (stages); shadow: it gets a
    # copy of a share of them after the route has answered, and is compared, never seen
    mode: Literal["canary", "shadow"] = "canary"
    stages: list[float] = Field(default_factory=lambda: [5.0, 25.0, 50.0, 100.0], min_length=1)
    min_requests: int = Field(200, ge=1)  # the candidate's, per stage, before it is judged
    slo: SLO = SLO()
    share: float = Field(10.0, gt=0, le=100)  # shadow: percent of the route's requests copied
    daily_cap_usd: float = Field(1.0, ge=0)  # shadow: the candidate's spend per UTC day, at most

    @field_validator("stages")
    @classmethod
    def _rising_percentages(cls, stages: list[float]) -> list[float]:
        if any(not 0 < s <= 100 for s in stages):
            raise ValueError("each stage is a percentage of the route's requests, in (0, 100]")
        if any(b <= a for a, b in itertools.pairwise(stages)):
            raise ValueError("stages must rise: [5, 25, 50, 100]")
        return stages
