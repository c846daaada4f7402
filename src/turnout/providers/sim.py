"""Provider kind `sim`: the simulator started in-process, reached over real HTTP like any
other OpenAI-compatible upstream, so the whole client path (pool, SSE, errors) is exercised."""

from __future__ import annotations

from pydantic import ValidationError

from turnout.config.load import ConfigError
from turnout.config.schema import ProviderConfig
from turnout.providers.http import HTTPProvider
from turnout.sim.behaviour import describe_errors
from turnout.sim.schema import SimBehaviour, sim_models
from turnout.sim.server import SimServer


def behaviours(name: str, config: ProviderConfig) -> dict[str, SimBehaviour]:
    """The provider's `sim:` section as behaviours. Normally validated with the config (this
    package registers it); a config validated before this package was first imported, or
    built without validation, still holds the raw section: checked here, same key paths."""
    try:
        return sim_models(config.sim)
    except ValidationError as exc:
        lines = describe_errors(exc)
        raise ConfigError("\n".join(f"providers.{name}.sim.{line}" for line in lines)) from None


class SimProvider(HTTPProvider):
    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        self.sim = SimServer(behaviours(name, config), config.seed, host="127.0.0.1", port=0)

    async def start(self) -> None:
        await self.sim.start()
        self.base_url = self.sim.url
        await super().start()

    async def close(self) -> None:
        await super().close()
        await self.sim.close()
