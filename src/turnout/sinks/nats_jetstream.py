"""Sink kind `nats`: publish to NATS JetStream, one subject per event type
(`turnout.events.fallback`, `turnout.events.health_changed`, ...), each publish acknowledged
by the stream. The stream (`TURNOUT_EVENTS`, subjects `turnout.events.>`) is created when
absent unless `create_stream: false` (then the operator creates it). Each message carries a
`Nats-Msg-Id` header (the event's id), so a batch tried again is not stored twice."""

from __future__ import annotations

import asyncio
from typing import Any

from turnout.config.sinks import NatsSinkConfig
from turnout.sinks.exported import Exported


class NatsSink:
    max_batch: int | None = None

    def __init__(self, config: NatsSinkConfig) -> None:
        self.config = config
        self._client: Any = None
        self._js: Any = None

    async def _connect(self) -> None:
        import nats  # imported on first use: an optional library (turnout[sinks])
        from nats.js.errors import NotFoundError

        config = self.config
        options: dict[str, Any] = {
            "servers": list(config.servers),
            "connect_timeout": config.timeout,
            "allow_reconnect": False,  # a broken connection is the worker's to retry
        }
        if config.user is not None:
            options["user"] = config.user
        if config.password is not None:
            options["password"] = config.password.reveal()
        if config.token is not None:
            options["token"] = config.token.reveal()
        client = await nats.connect(**options)
        try:
            js = client.jetstream(timeout=config.timeout)
            if config.create_stream:
                try:
                    await js.stream_info(config.stream)
                except NotFoundError:
                    await js.add_stream(name=config.stream, subjects=[f"{config.subject}.>"])
        except BaseException:
            await client.close()
            raise
        self._client, self._js = client, js

    async def send(self, events: list[Exported]) -> None:
        try:
            if self._js is None:
                await self._connect()
            subject = self.config.subject
            await asyncio.gather(
                *(
                    self._js.publish(
                        f"{subject}.{event.type}",
                        event.json(),
                        headers={"Nats-Msg-Id": str(event.data["id"])},
                    )
                    for event in events
                )
            )
        except BaseException:
            await self.close()  # the next try connects again
            raise

    async def close(self) -> None:
        client, self._client, self._js = self._client, None, None
        if client is not None and not client.is_closed:
            await client.close()
