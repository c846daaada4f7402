"""Provider kind `sim`: the simulator started in-process, reached over real HTTP like any
other OpenAI-compatible upstream, so the whole client path (pool, SSE, errors) is exercised."""

from __future__ import annotations

from turnout.config.schema import ProviderConfig
from turnout.providers.http import HTTPProvider
from turnout.sim.server import SimServer


class SimProvider(HTTPProvider):
    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        self.sim = SimServer(dict(config.sim), config.seed, host="127.0.0.1", port=0)

    async def start(self) -> None:
        await self.sim.start()
        self.base_url = self.sim.url
        await super().start()

    async def close(self) -> None:
        await super().close()
        await self.sim.close()
