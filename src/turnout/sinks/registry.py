"""Sink kind -> the class that delivers it. A kind's module imports its client library only
when it first delivers, so listing every kind here costs nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from turnout.config.sinks import SinkConfig
from turnout.sinks.base import Sink
from turnout.sinks.jsonl import JsonlSink
from turnout.sinks.kafka import KafkaSink
from turnout.sinks.nats_jetstream import NatsSink
from turnout.sinks.redis_stream import RedisSink
from turnout.sinks.webhook import WebhookSink

SINK_CLASSES: dict[str, Callable[[Any], Sink]] = {
    "jsonl": JsonlSink,
    "webhook": WebhookSink,
    "redis": RedisSink,
    "nats": NatsSink,
    "kafka": KafkaSink,
}


def make_sink(config: SinkConfig) -> Sink:
    return SINK_CLASSES[config.kind](config)
