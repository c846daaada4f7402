"""A target: one model of a plan (one deployment of it, for a model with several), with what
trying it needs (provider, timeouts, price).

Its own module so that the plan's policies (policies.py, sessions.py) and the planner that
builds them can all name it without importing one another."""

from __future__ import annotations

from dataclasses import dataclass

from turnout.config.schema import ModelConfig, Price, Timeouts
from turnout.model import Request
from turnout.providers.base import Provider

# Output limits learned from upstreams that refused a max_tokens larger than they can write
# ("max_tokens: 128000 > 64000, which is the maximum..."): (provider, upstream model) ->
# limit. Process-wide, so that every plan (and a reload's new plans) clamps before it asks
# again; bounded by the number of configured models.
_LEARNED: dict[tuple[str, str], int] = {}


def learn_output_limit(target: Target, limit: int) -> None:
    """The upstream said this target writes at most `limit` tokens."""
    _LEARNED[(target.provider.name, target.upstream_model)] = limit


@dataclass(slots=True, frozen=True)
class Target:
    name: str  # the model's key in config
    model: ModelConfig
    provider: Provider
    upstream_model: str
    timeouts: Timeouts
    price: Price  # config's, or the default table's
    # a model with several deployments: this one's label and priority (lower is preferred)
    deployment: str | None = None
    priority: int = 0
    # what health knows it by: the model's name, or `NAME@DEPLOYMENT` (set once, here)
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            key = self.name if self.deployment is None else f"{self.name}@{self.deployment}"
            object.__setattr__(self, "key", key)

    @property
    def max_output(self) -> int | None:
        """The most tokens it can write in one answer: its configured `max_output_tokens`,
        or what its upstream said when it refused more (the lower of the two)."""
        learned = _LEARNED.get((self.provider.name, self.upstream_model)) if _LEARNED else None
        configured = self.model.max_output_tokens
        if learned is None or (configured is not None and configured <= learned):
            return configured
        return learned

    def output_limit(self, request: Request) -> int | None:
        """The most this target can write for this request when that is less than the
        max_tokens it asks for (its output limit, and its context window less the prompt
        when routing counted it); None when the request's max_tokens fits."""
        asked = request.max_tokens
        if asked is None:
            return None
        limit = self.max_output or asked
        window = self.model.context_window
        if window is not None and request.prompt_tokens is not None:
            limit = min(limit, max(window - request.prompt_tokens, 1))
        return limit if limit < asked else None
