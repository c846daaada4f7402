"""Provider kind `sim`: the simulator started in-process, reached over real HTTP like any
other upstream, so the whole client path (pool, SSE, errors) is exercised. It speaks OpenAI's
chat completions, or with `dialect: anthropic` Anthropic's Messages API (the sim serves both),
so a simulated Claude is reached the way turnout reaches Anthropic: its dialect, its headers,
its errors."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, field_validator

from turnout.config.load import ConfigError
from turnout.config.schema import ProviderConfig
from turnout.dialects.anthropic.upstream import AnthropicUpstream
from turnout.providers.http import HTTPProvider
from turnout.providers.registry import register
from turnout.sim.behaviour import describe_errors
from turnout.sim.schema import SimBehaviour, sim_models
from turnout.sim.server import SimServer


class SimConfig(ProviderConfig):
    kind: Literal["sim"] = "sim"
    embeddings: ClassVar[bool] = True  # POST {base_url}/embeddings
    # per upstream-model behaviour, in the sim's own schema (turnout/sim/schema.py), checked
    # with the config so its errors carry their key path; and the seed that makes it repeatable
    sim: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    # the wire format turnout speaks to it: OpenAI's (POST /v1/chat/completions) or
    # Anthropic's (POST /v1/messages, anthropic-ratelimit-* headers, Anthropic error bodies)
    dialect: Literal["openai", "anthropic"] = "openai"

    @field_validator("sim")
    @classmethod
    def _sim_models(cls, value: dict[str, Any]) -> dict[str, SimBehaviour]:
        return sim_models(value)


def behaviours(name: str, config: SimConfig) -> dict[str, SimBehaviour]:
    """The provider's `sim:` section as behaviours. Validated with the config; a config built
    without validation (model_construct) still holds the raw section: checked here, same
    key paths."""
    try:
        return sim_models(config.sim)
    except ValidationError as exc:
        lines = describe_errors(exc)
        raise ConfigError("\n".join(f"providers.{name}.sim.{line}" for line in lines)) from None


class SimProvider(HTTPProvider):
    config: SimConfig

    def __init__(self, name: str, config: SimConfig) -> None:
        if config.dialect == "anthropic":
            super().__init__(name, config, AnthropicUpstream())
        else:
            super().__init__(name, config)
        self.sim = SimServer(behaviours(name, config), config.seed, host="127.0.0.1", port=0)

    async def start(self) -> None:
        await self.sim.start()
        self.base_url = self.sim.url
        await super().start()

    async def close(self) -> None:
        await super().close()
        await self.sim.close()


register("sim", SimConfig, SimProvider)
