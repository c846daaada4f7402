"""A request's spans, built after the fact from its ledger row and the attempts' outcomes:
one SERVER span for the request, one CLIENT child per attempt, with explicit start and end
times and the OpenTelemetry GenAI semantic-convention attributes
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/), plus turnout.* ones.

What is exact and what is approximate: the request span's times are the row's (started_at,
latency_ms). An attempt span whose outcome was seen (an AttemptFinished of that model inside
the request's time window) has that upstream call's own start and duration. An attempt with
no outcome was skipped before any call (breaker open, filtered out...) or its outcome was
not matched: its span has zero length, placed after the previous attempt, and
turnout.attempt.timed is false. When two concurrent requests of one route try the same model
in overlapping windows, their outcomes may be swapped (an outcome carries no request id).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from turnout.model import Outcome

OPERATION = "chat"  # gen_ai.operation.name: every request the gateway traces is a chat
_NS = 1_000_000_000


def _ns(seconds: float) -> int:
    return int(seconds * _NS)


def request_attributes(row: Any) -> dict[str, Any]:
    """The request span's attributes: what the client asked (gen_ai.request.model is the
    route or model name it sent) and what answered."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.request.model": row.route,
        "gen_ai.usage.input_tokens": row.prompt_tokens,
        "gen_ai.usage.output_tokens": row.completion_tokens,
        "turnout.request.id": row.id,
        "turnout.route": row.route,
        "turnout.attempts": len(row.attempts) + (1 if row.model else 0),
        "turnout.cost_usd": row.cost_usd,
        "turnout.outcome": row.outcome,
        "http.response.status_code": row.status,
    }
    if row.provider:
        attributes["gen_ai.provider.name"] = row.provider
    if row.model:
        attributes["gen_ai.response.model"] = row.model
    if row.ttft_ms is not None:
        attributes["turnout.ttft_ms"] = row.ttft_ms
    if row.attempts:
        attributes["turnout.fallback_from"] = [str(a.get("model", "")) for a in row.attempts]
    if row.outcome != "ok":
        # low cardinality: the outcome (client_closed, stream_failed...) or the status code
        attributes["error.type"] = str(row.status) if row.outcome == "error" else row.outcome
    return attributes


def emit(
    tracer: Tracer,
    row: Any,
    outcomes: Sequence[Outcome | None],
    provider_of: Callable[[str], str | None],
) -> None:
    """The request span and its attempts' spans, ended at once (the exporter batches them).

    `outcomes` has one entry per attempt: row.attempts in order, then the answering model
    when there is one; None where no outcome was matched."""
    start = _ns(row.started_at)
    end = start + _ns(row.latency_ms / 1000)
    root = tracer.start_span(
        f"{OPERATION} {row.route}",
        kind=SpanKind.SERVER,
        start_time=start,
        attributes=request_attributes(row),
    )
    if row.outcome != "ok":
        root.set_status(Status(StatusCode.ERROR, row.error or row.outcome))
    parent = trace.set_span_in_context(root)
    entries: list[tuple[str, str | None]] = [
        (str(a.get("model", "")), str(a.get("reason", ""))) for a in row.attempts
    ]
    if row.model:
        entries.append((row.model, None))  # the answering attempt: no reason to move on
    cursor = start
    for index, ((model, reason), outcome) in enumerate(zip(entries, outcomes, strict=True)):
        answered = reason is None
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.request.model": model,
            "turnout.request.id": row.id,
            "turnout.route": row.route,
            "turnout.attempt.index": index,
            "turnout.attempt.timed": outcome is not None,
        }
        provider = outcome.provider if outcome else (row.provider if answered else None)
        provider = provider or provider_of(model)
        if provider:
            attributes["gen_ai.provider.name"] = provider
        if outcome is not None:
            a_start = _ns(outcome.started)
            a_end = a_start + _ns(outcome.latency)
            if outcome.usage is not None:
                attributes["gen_ai.usage.input_tokens"] = outcome.usage.prompt_tokens
                attributes["gen_ai.usage.output_tokens"] = outcome.usage.completion_tokens
            if outcome.ttft is not None:
                attributes["turnout.ttft_ms"] = outcome.ttft * 1000
        else:
            a_start = a_end = cursor
            if answered:  # the rest of the request, after the attempts before it
                a_end = max(cursor, end)
                attributes["gen_ai.usage.input_tokens"] = row.prompt_tokens
                attributes["gen_ai.usage.output_tokens"] = row.completion_tokens
        if answered:
            attributes["gen_ai.response.model"] = model
        else:
            attributes["turnout.attempt.reason"] = reason
            kind = outcome.error_class.value if outcome and outcome.error_class else None
            attributes["error.type"] = kind or reason or "_OTHER"
        span = tracer.start_span(
            f"{OPERATION} {model}",
            context=parent,
            kind=SpanKind.CLIENT,
            start_time=a_start,
            attributes=attributes,
        )
        if not answered:
            span.set_status(Status(StatusCode.ERROR, reason or None))
        span.end(end_time=a_end)
        cursor = max(cursor, a_end)
    root.end(end_time=max(end, cursor))
