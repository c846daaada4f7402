"""Sink kind `kafka`: produce to one topic with aiokafka, keyed by route (so one route's
events keep their order in one partition). A batch is handed to the producer whole and
awaited until every record is acknowledged. The topic must exist (or the broker creates
topics on first use): creating topics is the operator's call (partitions, replication)."""

from __future__ import annotations

import asyncio
from typing import Any

from turnout.config.sinks import KafkaSinkConfig
from turnout.sinks.exported import Exported


class KafkaSink:
    max_batch: int | None = None

    def __init__(self, config: KafkaSinkConfig) -> None:
        self.config = config
        self._producer: Any = None

    async def _connect(self) -> Any:
        from aiokafka import AIOKafkaProducer  # imported on first use: an optional library

        config = self.config
        options: dict[str, Any] = {
            "bootstrap_servers": list(config.bootstrap_servers),
            "security_protocol": config.security_protocol,
            "request_timeout_ms": int(config.timeout * 1000),
            "client_id": "turnout",
        }
        if config.sasl_mechanism is not None:
            options["sasl_mechanism"] = config.sasl_mechanism
            options["sasl_plain_username"] = config.sasl_username
            if config.sasl_password is not None:
                options["sasl_plain_password"] = config.sasl_password.reveal()
        producer = AIOKafkaProducer(**options)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def send(self, events: list[Exported]) -> None:
        try:
            if self._producer is None:
                self._producer = await self._connect()
            topic = self.config.topic
            sent = [
                await self._producer.send(topic, event.json(), key=event.key.encode())
                for event in events
            ]
            await asyncio.gather(*sent)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
