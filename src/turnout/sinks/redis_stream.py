"""Sink kind `redis`: XADD to a stream, trimmed to about `maxlen` entries (MAXLEN ~), a batch
in one pipeline. Each entry has fields `type` and `event` (the event as JSON)."""

from __future__ import annotations

from typing import Any

from turnout.config.sinks import RedisSinkConfig
from turnout.sinks.exported import Exported


class RedisSink:
    max_batch: int | None = None

    def __init__(self, config: RedisSinkConfig) -> None:
        self.config = config
        self._client: Any = None

    def _connect(self) -> Any:
        from redis import asyncio as aioredis  # imported on first use: an optional library

        config = self.config
        password = config.password.reveal() if config.password is not None else None
        return aioredis.from_url(
            config.url,
            password=password,
            socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
        )

    async def send(self, events: list[Exported]) -> None:
        if self._client is None:
            self._client = self._connect()
        config = self.config
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for event in events:
                    fields = {"type": event.type, "event": event.json()}
                    pipe.xadd(config.stream, fields, maxlen=config.maxlen, approximate=True)
                await pipe.execute()
        except BaseException:
            await self.close()  # the next try starts from a fresh connection
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
