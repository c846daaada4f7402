"""The traces subscriber: a queued (never inline) bus subscriber that keeps the recent
attempts' outcomes and, when a request's RequestFinished arrives, builds its spans (spans.py)
and hands them to the SDK's batch processor, which exports them over OTLP/HTTP on its own
thread. Nothing of this runs on a request's path.

An Outcome carries no request id, so a request's attempts are found among the pending
outcomes by model and time: the earliest outcome of that model that started inside the
request's window (spans.py says what that makes approximate). Outcomes wait in a bounded
deque: an attempt of a request whose RequestFinished never comes is pushed out by newer ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from turnout.events import AttemptFinished, RequestFinished
from turnout.model import Outcome
from turnout.traces.spans import emit

PENDING = 2048  # outcomes kept for matching: a few seconds of attempts at high load
_SLACK = 0.05  # seconds: the row's clock and the attempt's are read at slightly different times


class TraceSubscriber:
    """Turns the bus's AttemptFinished and RequestFinished events into spans."""

    def __init__(
        self,
        provider: TracerProvider,
        provider_of: Callable[[str], str | None],
        pending: int = PENDING,
    ) -> None:
        self.tracer = provider.get_tracer("turnout")
        self.provider_of = provider_of
        self.pending: deque[Outcome] = deque(maxlen=pending)

    def __call__(self, event: Any) -> None:
        if isinstance(event, AttemptFinished):
            if not event.outcome.probe:  # health probes belong to no request
                self.pending.append(event.outcome)
            return
        if isinstance(event, RequestFinished):
            row = event.row
            models = [str(a.get("model", "")) for a in row.attempts]
            if row.model:
                models.append(row.model)
            emit(self.tracer, row, self._claim(row, models), self.provider_of)

    def _claim(self, row: Any, models: list[str]) -> list[Outcome | None]:
        """Each attempt's outcome, taken out of the pending ones (None: not seen)."""
        earliest = row.started_at - _SLACK
        latest = row.started_at + row.latency_ms / 1000 + _SLACK
        claimed: list[Outcome | None] = []
        for model in models:
            found = None
            for outcome in self.pending:
                if outcome.model == model and earliest <= outcome.started <= latest:
                    found = outcome
                    break
            if found is not None:
                self.pending.remove(found)
                earliest = found.started  # the next attempt started after this one
            claimed.append(found)
        return claimed


def tracer_provider(service_name: str, sample: float, processor: SpanProcessor) -> TracerProvider:
    """A provider of its own (not the process-global one: each gateway has its config)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample)),
    )
    provider.add_span_processor(processor)
    return provider
