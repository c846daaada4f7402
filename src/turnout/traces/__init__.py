"""OpenTelemetry traces (the optional extra `turnout[traces]`): a span per request and per
attempt, built from the event bus after the fact and exported over OTLP/HTTP.

This module imports no OpenTelemetry package: the server imports it whether or not the extra
is installed, and only `traces: {enabled: true}` (checked by config/traces.py) loads the SDK.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from turnout.events import AttemptFinished, RequestFinished

if TYPE_CHECKING:
    from turnout.gateway import Gateway

log = logging.getLogger("turnout.traces")

EXPORT_EVERY_MS = 1000  # the batch processor's delay: spans reach the collector within ~1 s


def attach_traces(gateway: Gateway) -> object | None:
    """Subscribes span building to the gateway's bus when its config turns traces on, and
    returns the tracer provider (None when off). Read once, when the server starts."""
    config = gateway.config.traces
    if not config.enabled:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from turnout.traces.subscriber import TraceSubscriber, tracer_provider

    processor = BatchSpanProcessor(
        OTLPSpanExporter(endpoint=config.traces_url), schedule_delay_millis=EXPORT_EVERY_MS
    )
    provider = tracer_provider(config.service_name, config.sample, processor)

    def provider_of(model: str) -> str | None:
        entry = gateway.config.models.get(model)
        return entry.provider if entry is not None else None

    gateway.bus.subscribe(
        TraceSubscriber(provider, provider_of),
        kinds=(AttemptFinished, RequestFinished),
        name="traces",
    )
    where = urlsplit(config.traces_url)  # host and port only: a URL may carry credentials
    log.info("traces: exporting spans to %s://%s", where.scheme, where.hostname)
    return provider


__all__ = ["attach_traces"]
