"""The simulator's own schema: how one simulated model behaves. It is the simulator's, not the
gateway's: the product's config (config/schema.py) knows only that a provider of kind `sim`
has a `sim:` section, and the sim kind validates that section with `sim_models` (registered
by providers/__init__.py), so a bad entry is still reported at load time with its key path
(`providers.NAME.sim.MODEL.ttft: ...`). Sim files (`turnout sim --config`) use the same
models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, TypeAdapter

from turnout.config.fields import Duration, Probability, Strict

__all__ = ["SimBehaviour", "SimOutage", "sim_models"]


class SimOutage(Strict):
    start: Duration | Literal[0] = 0
    end: Duration
    status: int = 503
    # the error's message (default: the status's usual one): an upstream's own words, such as
    # OpenRouter's 401 "No cookie auth credentials found" for a key it no longer knows
    message: str | None = None


class SimBehaviour(Strict):
    """How one simulated model behaves. All randomness is seeded."""

    ttft: Duration | Literal[0] = 0.0  # mean seconds to the first token
    ttft_jitter: float = Field(0.0, ge=0)  # +/- fraction of ttft, uniform
    # lognormal: `ttft` is the median, `ttft_sigma` the shape (sim/ttft.py)
    ttft_distribution: Literal["uniform", "lognormal"] = "uniform"
    ttft_sigma: float = Field(0.5, gt=0)
    slow_rate: Probability = 0.0  # this share of requests wait slow_factor times longer
    slow_factor: float = Field(10.0, ge=1)
    tokens_per_second: float = Field(200.0, gt=0)
    reply: str = "Hello from the simulator."
    error_rate: dict[int, Probability] = Field(default_factory=dict)  # status -> probability
    rate_limit_rate: Probability = 0.0  # probability of a 429
    retry_after: float | None = None  # seconds, sent with 429s
    ratelimit_remaining: int | None = None  # x-ratelimit-remaining-requests to report
    ratelimit_reset: Duration = 1.0  # x-ratelimit-reset-requests to report with it
    # enforced: this many requests per `ratelimit_reset` window (fixed windows of the wall
    # clock); the headers then report what is really left, and a request over it is a 429
    ratelimit_limit: int | None = Field(None, ge=1)
    hang_rate: Probability = 0.0  # never answer
    disconnect_rate: Probability = 0.0  # drop the stream mid-way
    disconnect_after: int = Field(0, ge=0)  # chunks sent before a disconnect
    # streams only: after this many content chunks, an in-band error event ends the stream
    stream_error_after: int | None = Field(None, ge=0)
    # streams only: after this many content chunks the stream pauses for `stall_for` seconds
    # (then goes on as if nothing happened): a stalled upstream
    stall_after: int | None = Field(None, ge=0)
    stall_for: Duration | Literal[0] = 0.0
    malformed_rate: Probability = 0.0  # answer JSON mode with broken JSON
    # every JSON-mode request fails with this HTTP status (free text is answered): a model
    # whose structured output is broken server-side, the upgrade story's stage-4 500s
    json_error_status: int | None = Field(None, ge=400, le=599)
    # a model that copes with small JSON objects only: beyond this many fields it drops the rest
    json_fields_limit: int | None = Field(None, ge=0)
    outages: list[SimOutage] = Field(default_factory=list)


_MODELS = TypeAdapter(dict[str, SimBehaviour])


def sim_models(section: Any) -> dict[str, SimBehaviour]:
    """A `sim:` section (model name -> behaviour fields) validated; raises ValidationError,
    which the config's own validation reports under the section's key path."""
    return _MODELS.validate_python(section)
