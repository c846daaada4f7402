"""OpenTelemetry traces (issue 14, item 2): a span per request and one child per attempt,
built from the bus's events after the fact. First the subscriber alone on a real EventBus,
its spans kept by the SDK's in-memory exporter; then a real gateway process whose primary
fails, exporting over OTLP/HTTP to a local receiver that decodes the protobuf."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import ValidationError

from tests.conftest import ask, sim_config
from tests.upstreams import serve_app
from tests.webhooks import until
from turnout.accounting.records import LedgerRow
from turnout.config.schema import Config
from turnout.events import AttemptFinished, EventBus, RequestFinished
from turnout.model import ErrorClass, Outcome, Usage
from turnout.traces.subscriber import TraceSubscriber, tracer_provider

NS = 1_000_000_000
T0 = 1_790_000_000.0  # a request's start, epoch seconds


def _failover_row() -> LedgerRow:
    """primary failed (500), `spare` was skipped (breaker open), backup answered."""
    return LedgerRow(
        id="req0001",
        started_at=T0,
        route="chat",
        dialect="openai",
        stream=False,
        status=200,
        outcome="ok",
        model="backup",
        provider="sim",
        attempts=[
            {"model": "primary", "reason": "server_error(500)"},
            {"model": "spare", "reason": "breaker_open"},
        ],
        prompt_tokens=12,
        completion_tokens=30,
        cost_usd=0.0021,
        ttft_ms=150.0,
        latency_ms=500.0,
    )


def _outcome(model: str, started: float, latency: float, **fields: Any) -> Outcome:
    return Outcome(
        route="chat", model=model, provider="sim", started=started, latency=latency, **fields
    )


async def _spans_for(events: list[Any], sample: float = 1.0) -> list[Any]:
    """The spans the subscriber makes of these events, published on a real (queued) bus."""
    exporter = InMemorySpanExporter()
    provider = tracer_provider("turnout-test", sample, SimpleSpanProcessor(exporter))
    bus = EventBus()
    bus.subscribe(
        TraceSubscriber(provider, {"spare": "other-provider"}.get),
        kinds=(AttemptFinished, RequestFinished),
        name="traces",
    )
    await bus.start()
    for event in events:
        bus.publish(event)
    await bus.close()  # drains the queue
    assert bus.stats()["subscribers"]["traces"]["errors"] == 0
    return list(exporter.get_finished_spans())


async def test_a_failover_makes_a_request_span_with_a_child_per_attempt() -> None:
    failed = _outcome(
        "primary", T0 + 0.01, 0.1, ok=False, error_class=ErrorClass.SERVER_ERROR, status=500
    )
    answered = _outcome("backup", T0 + 0.12, 0.35, ok=True, ttft=0.14, usage=Usage(12, 30))
    events = [
        AttemptFinished(_outcome("backup", T0 - 30, 0.2, ok=True)),  # an earlier request's
        AttemptFinished(_outcome("primary", T0 + 0.05, 0.01, ok=False, probe=True)),  # a probe
        AttemptFinished(failed),
        AttemptFinished(answered),
        RequestFinished(_failover_row()),
    ]
    spans = await _spans_for(events)
    by_name = {span.name: span for span in spans}
    assert sorted(by_name) == ["chat backup", "chat chat", "chat primary", "chat spare"]

    root = by_name["chat chat"]
    assert root.parent is None and root.kind is SpanKind.SERVER
    assert (root.start_time, root.end_time) == (int(T0 * NS), int(T0 * NS) + int(0.5 * NS))
    assert root.resource.attributes["service.name"] == "turnout-test"
    assert dict(root.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "chat",
        "gen_ai.response.model": "backup",
        "gen_ai.provider.name": "sim",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 30,
        "turnout.request.id": "req0001",
        "turnout.route": "chat",
        "turnout.attempts": 3,
        "turnout.cost_usd": 0.0021,
        "turnout.outcome": "ok",
        "turnout.ttft_ms": 150.0,
        "turnout.fallback_from": ("primary", "spare"),
        "http.response.status_code": 200,
    }
    assert root.status.status_code is StatusCode.UNSET

    for name in ("chat primary", "chat spare", "chat backup"):
        child = by_name[name]
        assert child.kind is SpanKind.CLIENT
        assert child.parent is not None and child.parent.span_id == root.context.span_id
        assert child.context.trace_id == root.context.trace_id
        assert child.attributes["turnout.request.id"] == "req0001"

    primary = by_name["chat primary"]  # its outcome's own times
    assert primary.start_time == int((T0 + 0.01) * NS)
    assert primary.end_time == primary.start_time + int(0.1 * NS)
    assert primary.attributes["error.type"] == "server_error"
    assert primary.attributes["gen_ai.provider.name"] == "sim"
    assert primary.attributes["turnout.attempt.timed"] is True
    assert primary.status.status_code is StatusCode.ERROR

    spare = by_name["chat spare"]  # no call was made: zero length, after the primary's
    assert spare.start_time == spare.end_time == primary.end_time
    assert spare.attributes["turnout.attempt.timed"] is False
    assert spare.attributes["error.type"] == "breaker_open"
    assert spare.attributes["gen_ai.provider.name"] == "other-provider"  # from the config

    backup = by_name["chat backup"]
    assert backup.start_time == int((T0 + 0.12) * NS)
    assert backup.end_time == backup.start_time + int(0.35 * NS)
    assert backup.attributes["gen_ai.response.model"] == "backup"
    assert backup.attributes["gen_ai.usage.output_tokens"] == 30
    assert backup.attributes["turnout.ttft_ms"] == pytest.approx(140.0)
    assert "error.type" not in backup.attributes
    assert [s.attributes["turnout.attempt.index"] for s in (primary, spare, backup)] == [0, 1, 2]


async def test_a_failed_request_without_outcomes_still_spans_its_attempts() -> None:
    row = _failover_row()
    row.model, row.provider, row.status, row.outcome = None, None, 502, "error"
    row.error = "every target failed"
    spans = await _spans_for([RequestFinished(row)])
    by_name = {span.name: span for span in spans}
    assert sorted(by_name) == ["chat chat", "chat primary", "chat spare"]
    root = by_name["chat chat"]
    assert root.attributes["error.type"] == "502"
    assert root.status.status_code is StatusCode.ERROR
    assert "gen_ai.response.model" not in root.attributes
    assert by_name["chat primary"].attributes["error.type"] == "server_error(500)"
    assert by_name["chat primary"].start_time == root.start_time  # approximate, and says so
    assert by_name["chat primary"].attributes["turnout.attempt.timed"] is False


async def test_sample_zero_exports_nothing() -> None:
    assert await _spans_for([RequestFinished(_failover_row())], sample=0.0) == []


def test_the_traces_section_checks_its_endpoint() -> None:
    assert Config.model_validate({}).traces.enabled is False
    url = Config.model_validate({"traces": {"otlp_endpoint": "http://c:4318/"}}).traces.traces_url
    assert url == "http://c:4318/v1/traces"
    with pytest.raises(ValidationError, match="traces.otlp_endpoint"):
        Config.model_validate({"traces": {"otlp_endpoint": "collector:4318"}})


class OtlpReceiver:
    """An OTLP/HTTP collector's traces endpoint: decodes each protobuf export it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.services: set[str] = set()
        self._lock = threading.Lock()

    def app(self) -> web.Application:
        async def export(request: web.Request) -> web.Response:
            assert request.content_type == "application/x-protobuf"
            message = ExportTraceServiceRequest.FromString(await request.read())
            with self._lock:
                for resource_spans in message.resource_spans:
                    for attribute in resource_spans.resource.attributes:
                        if attribute.key == "service.name":
                            self.services.add(attribute.value.string_value)
                    for scope_spans in resource_spans.scope_spans:
                        self.spans.extend(scope_spans.spans)
            return web.Response(body=b"", content_type="application/x-protobuf")

        app = web.Application()
        app.router.add_post("/v1/traces", export)
        return app

    def named(self) -> dict[str, list[Any]]:
        with self._lock:
            spans = list(self.spans)
        named: dict[str, list[Any]] = {}
        for span in spans:
            named.setdefault(span.name, []).append(span)
        return named


def _attributes(span: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attribute in span.attributes:
        value = attribute.value
        values[attribute.key] = getattr(value, value.WhichOneof("value"))
    return values


def test_a_gateway_exports_the_spans_of_a_failover(gateway_factory) -> None:
    receiver = OtlpReceiver()
    config = sim_config(
        {"primary": {"error_rate": {500: 1.0}}, "backup": {"reply": "backup answered"}},
        {"chat": {"targets": ["primary", "backup"]}},
    )
    with serve_app(receiver.app()) as port:
        config["traces"] = {
            "enabled": True,
            "otlp_endpoint": f"http://127.0.0.1:{port}",
            "service_name": "turnout-e2e",
        }
        gateway = gateway_factory(config)
        for stream in (False, True):
            text, headers = ask(gateway, stream=stream)
            assert text == "backup answered"
        ids = {headers["x-turnout-request-id"]}

        named = until(
            "two requests' spans at the receiver",
            lambda: (n := receiver.named()) and len(n.get("chat chat", [])) >= 2 and n,
        )
        assert receiver.services == {"turnout-e2e"}
        roots = named["chat chat"]
        assert {_attributes(r)["gen_ai.response.model"] for r in roots} == {"backup"}
        assert ids <= {_attributes(r)["turnout.request.id"] for r in roots}
        root_ids = {r.span_id for r in roots}
        until("the attempts' spans", lambda: len(receiver.named().get("chat backup", [])) >= 2)
        named = receiver.named()
        for name in ("chat primary", "chat backup"):
            for child in named[name]:
                assert child.parent_span_id in root_ids
                assert _attributes(child)["gen_ai.provider.name"] == "sim"
                assert child.start_time_unix_nano <= child.end_time_unix_nano
        primary = _attributes(named["chat primary"][0])
        assert primary["gen_ai.request.model"] == "primary"
        assert primary["error.type"] == "server_error"
        assert primary["turnout.attempt.timed"] is True
        assert time.time() * NS >= max(r.end_time_unix_nano for r in roots)
        assert "event subscriber traces failed" not in gateway.log()


def test_traces_on_without_the_extra_is_a_config_error_naming_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)  # as if not installed
    with pytest.raises(ValidationError, match=r"turnout\[traces\].*opentelemetry\.sdk"):
        Config.model_validate({"traces": {"enabled": True}})
    assert Config.model_validate({"traces": {"enabled": False}}).traces.enabled is False


def test_the_server_imports_no_span_code_while_traces_are_off() -> None:
    """turnout.traces' modules that import the SDK load only when traces are on. (Whether
    opentelemetry itself is imported cannot be asked: redis imports it when it is installed.)"""
    code = (
        "import sys, turnout.server.app;"
        " print(sorted(m for m in sys.modules if m.startswith('turnout.traces')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "['turnout.traces']"
