"""Events out (issue 14, item 3): the bus's events delivered to a JSONL file, a webhook, a Redis
stream, a NATS JetStream subject and a Kafka topic, from real requests through a real gateway
process (the openai SDK as the client, a primary whose key is refused, the simulator as the
fallback); a dead webhook that neither slows nor blocks anything and is counted; secrets in
no event and no log line; sink config errors at their key path."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import ask, free_port
from tests.services import kafka_bootstrap, nats_url, redis_url
from tests.upstreams import key_echoing_upstream, serve_app
from tests.webhooks import Receiver, read_jsonl, until
from turnout.config import ConfigError, parse_config

KEY = "sk-up-SINKSECRET-Q1w2E3r4T5y6U7i8O9p0"  # the primary's key: its upstream echoes it
KEY_ENV = "TURNOUT_TEST_SINK_UPSTREAM_KEY"
HOOK_TOKEN = "T0SINK/B0HOOK/xoxHookToken9f8e7d6c5b4a"  # a Slack-like webhook URL's secret path
HOOK_ENV = "TURNOUT_TEST_SINK_WEBHOOK"
REQUESTS = 3


def _config(upstream_port: int, sinks: list[dict[str, Any]]) -> dict[str, Any]:
    """Route `chat`: `primary` (an OpenAI-style upstream refusing our key with a 401 that
    echoes it) first, then `backup` on the simulator."""
    return {
        "providers": {
            "up": {
                "kind": "openai",
                "base_url": f"http://127.0.0.1:{upstream_port}/v1",
                "api_key": "${" + KEY_ENV + "}",
            },
            "sim": {
                "kind": "sim",
                "seed": 1,
                "sim": {"backup": {"reply": "backup answered", "tokens_per_second": 5000}},
            },
        },
        "models": {
            "primary": {"provider": "up", "model": "gpt-x"},
            "backup": {"provider": "sim", "supports": ["tools", "json", "vision"]},
        },
        "routes": {"chat": {"targets": ["primary", "backup"]}},
        "sinks": sinks,
    }


def _fallbacks(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["request_id"]: e for e in events if e["type"] == "fallback"}


def _read_redis(url: str, stream: str) -> list[dict[str, Any]]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        entries = client.xrange(stream)
        assert all(fields[b"type"].decode() for _, fields in entries)
        return [json.loads(fields[b"event"]) for _, fields in entries]
    finally:
        client.close()


def _drop_redis_stream(url: str, stream: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.delete(stream)
    finally:
        client.close()


async def _read_nats(url: str, subject: str, stream: str, want: int) -> list[dict[str, Any]]:
    """Every message on `<subject>.fallback`, pulled from the JetStream stream the sink
    created, then the stream deleted again."""
    import nats

    client = await nats.connect(url)
    try:
        js = client.jetstream()
        pull = await js.pull_subscribe(f"{subject}.fallback", durable=None, stream=stream)
        messages = await pull.fetch(want, timeout=10)
        for message in messages:
            await message.ack()
        events = [json.loads(m.data) for m in messages]
        assert {m.subject for m in messages} == {f"{subject}.fallback"}
        await js.delete_stream(stream)
        return events
    finally:
        await client.close()


async def _read_kafka(bootstrap: str, topic: str, want: int) -> list[tuple[bytes, dict]]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[tuple[bytes, dict]] = []
    try:
        deadline = time.monotonic() + 20
        while len(found) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                found += [(r.key, json.loads(r.value)) for r in records]
    finally:
        await consumer.stop()
    return found


def _check_fallback(event: dict[str, Any], request_id: str) -> None:
    """One request's fallback event: its id, route, the models tried and why."""
    assert event["request_id"] == request_id
    assert event["route"] == "chat"
    assert event["from_model"] == "primary" and event["to_model"] == "backup"
    assert event["models"] == ["primary", "backup"]
    assert [a["model"] for a in event["attempts"]] == ["primary"]
    # the first request met the 401 itself; the later ones skip the rejected key
    assert event["attempts"][0]["reason"] in ("auth(401)", "misconfigured")
    assert event["outcome"] == "ok" and event["status"] == 200
    assert isinstance(event["at"], float) and event["id"]


def _no_secret(text: str) -> None:
    assert KEY not in text and KEY[6:20] not in text, "the upstream key leaked"
    assert HOOK_TOKEN not in text and "xoxHookToken" not in text, "the webhook URL leaked"


def test_events_from_real_requests_reach_every_sink(gateway_factory, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:10]
    jsonl = tmp_path / "events" / "turnout.jsonl"
    redis_stream = f"turnout-test-{run}:events"
    subject, nats_stream = f"turnout.test{run}", f"TURNOUT_TEST_{run.upper()}"
    topic = f"turnout-test-{run}"
    receiver = Receiver()
    with serve_app(key_echoing_upstream()) as upstream, serve_app(receiver.app()) as hook_port:
        sinks = [
            # default filter: everything but per-attempt noise
            {"kind": "jsonl", "name": "file", "path": str(jsonl)},
            {
                "kind": "webhook",
                "name": "ops",
                "url": "${" + HOOK_ENV + "}",
                "events": ["fallback"],
            },
            {"kind": "redis", "name": "stream", "url": redis_url(), "stream": redis_stream},
            {
                "kind": "nats",
                "name": "bus",
                "servers": [nats_url()],
                "subject": subject,
                "stream": nats_stream,
                "events": ["fallback", "health_changed"],
            },
            {
                "kind": "kafka",
                "name": "log",
                "bootstrap_servers": [kafka_bootstrap()],
                "topic": topic,
                "events": "all",
            },
        ]
        env = {KEY_ENV: KEY, HOOK_ENV: f"http://127.0.0.1:{hook_port}/services/{HOOK_TOKEN}"}
        gateway = gateway_factory(_config(upstream, sinks), env=env)
        request_ids = []
        for n in range(REQUESTS):
            text, headers = ask(gateway, f"question {n}")
            assert text == "backup answered"
            request_ids.append(headers["x-turnout-request-id"])

        def every_request(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
            found = _fallbacks(events)
            return found if set(request_ids) <= set(found) else None

        # the JSONL file: every fallback, the provider's health change, no attempt events
        in_file = until("the JSONL file", lambda: every_request(read_jsonl(jsonl)))
        file_events = read_jsonl(jsonl)
        assert {e["type"] for e in file_events} == {"fallback", "health_changed"}
        misconfigured = next(e for e in file_events if e["type"] == "health_changed")
        assert misconfigured["provider"] == "up" and misconfigured["state"] == "misconfigured"

        # the webhook: Slack-compatible bodies, only the fallbacks it asked for
        hooked = until("the webhook", lambda: every_request(receiver.events()))
        assert {e["type"] for e in receiver.events()} == {"fallback"}
        assert all(p == f"/services/{HOOK_TOKEN}" for p in receiver.paths)
        first_text = receiver.bodies[0]["text"]
        assert "route chat fell back to backup" in first_text and request_ids[0] in first_text

        # the Redis stream (XRANGE)
        in_redis = until(
            "the Redis stream", lambda: every_request(_read_redis(redis_url(), redis_stream))
        )

        # the NATS JetStream subject turnout.test<run>.fallback
        from_nats = asyncio.run(_read_nats(nats_url(), subject, nats_stream, REQUESTS))
        in_nats = every_request(from_nats)
        assert in_nats is not None, from_nats

        # the Kafka topic, keyed by route, with the per-attempt events too ("all")
        records = asyncio.run(_read_kafka(kafka_bootstrap(), topic, REQUESTS + 2))
        in_kafka = every_request([value for _, value in records])
        assert in_kafka is not None, records
        assert {key for key, value in records if value["type"] == "fallback"} == {b"chat"}
        failed = [value for _, value in records if value["type"] == "attempt_failed"]
        assert failed and failed[0]["model"] == "primary" and failed[0]["status"] == 401
        # each failed attempt names the client request it was for
        assert {event["request_id"] for event in failed} <= set(request_ids), failed

        for found in (in_file, hooked, in_redis, in_nats, in_kafka):
            for request_id in request_ids:
                _check_fallback(found[request_id], request_id)
        assert in_file[request_ids[0]]["attempts"][0]["reason"] == "auth(401)"

        # the upstream echoed the key into its 401 (the attempt event carries that message)
        # and the webhook URL is a secret: neither is in any event, nor in the gateway's log
        everything = json.dumps([file_events, receiver.bodies, [v for _, v in records]])
        everything += json.dumps(_read_redis(redis_url(), redis_stream)) + json.dumps(from_nats)
        _no_secret(everything)
        assert "[redacted]" in json.dumps(failed)  # the echo was there, and was removed

        stats = gateway.get("/health").json()["sinks"]
        assert stats["ops"]["delivered"] == REQUESTS  # the webhook: the fallbacks only
        for name in ("file", "ops", "stream", "bus", "log"):
            counts = stats[name]
            assert counts["delivered"] >= REQUESTS, (name, counts)
            assert counts["dropped"] == counts["failed"] == counts["errors"] == 0, (name, counts)
        gateway.stop()
        _no_secret(gateway.log())
    _drop_redis_stream(redis_url(), redis_stream)


@contextmanager
def _hanging_receiver() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers one."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(200)
        yield listener.getsockname()[1]


@contextmanager
def _refusing_receiver() -> Iterator[int]:
    yield free_port()  # nothing listens there


@contextmanager
def _failing_receiver() -> Iterator[int]:
    """Answers every POST with a 500 whose body quotes the URL it was sent to (the secret)."""

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text=f"no route for {request.url}")

    app = web.Application()
    app.router.add_post("/{tail:.*}", fail)
    with serve_app(app) as port:
        yield port


@pytest.mark.parametrize(
    "receiver", [_refusing_receiver, _hanging_receiver, _failing_receiver], ids=lambda r: r.__name__
)
def test_a_dead_webhook_neither_blocks_requests_nor_goes_uncounted(
    gateway_factory, tmp_path: Path, receiver: Callable[[], Any]
) -> None:
    jsonl = tmp_path / "events.jsonl"
    with serve_app(key_echoing_upstream()) as upstream, receiver() as hook_port:
        sinks = [
            {
                "kind": "webhook",
                "name": "dead",
                "url": "${" + HOOK_ENV + "}",
                "events": "all",
                "max_queue": 4,
                "retries": 2,
                "backoff": "100ms",
                "timeout": "300ms",
            },
            {"kind": "jsonl", "name": "file", "path": str(jsonl), "events": ["fallback"]},
        ]
        env = {KEY_ENV: KEY, HOOK_ENV: f"http://127.0.0.1:{hook_port}/services/{HOOK_TOKEN}"}
        gateway = gateway_factory(_config(upstream, sinks), env=env)
        request_ids = []
        for n in range(20):
            text, headers = ask(gateway, f"question {n}")
            assert text == "backup answered"  # every request answered, whatever the sink does
            request_ids.append(headers["x-turnout-request-id"])

        def counts() -> dict[str, int]:
            return gateway.get("/health").json()["sinks"]["dead"]

        # the dead sink's queue overflowed (dropped, counted) and its batches failed after
        # their retries (counted), and the bus counts both for its subscriber too
        dead = until("the dead sink's counters", lambda: (c := counts())["failed"] and c)
        assert dead["dropped"] > 0 and dead["delivered"] == 0 and dead["errors"] >= 3, dead
        bus = gateway.get("/health").json()["events"]["subscribers"]["sink:dead"]
        assert bus["dropped"] == dead["dropped"] and bus["errors"] > 0
        # the healthy sink beside it got every event all the same
        in_file = until(
            "the JSONL sink",
            lambda: (found := _fallbacks(read_jsonl(jsonl))).keys() >= set(request_ids) and found,
        )
        assert len(in_file) == 20
        gateway.stop()  # shuts down although the webhook never answers
        assert gateway.process.returncode == 0
        log = gateway.log()
        assert "event sink dead is failing" in log
        _no_secret(log)


# --- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        ({"kind": "carrier-pigeon", "name": "x"}, "sinks.0.kind: unknown sink kind"),
        ({"kind": "webhook", "name": "x", "url": "https://hooks/T0/B0/x"}, "sinks.0.url: must be"),
        ({"kind": "jsonl", "name": "x", "path": "e", "events": ["fallbak"]}, "sinks.0.events:"),
        ({"kind": "jsonl", "name": "x", "path": "e", "retries": -1}, "sinks.0.retries:"),
        ({"kind": "jsonl", "name": "x", "path": "e", "backoff": "soon"}, "sinks.0.backoff:"),
        ({"kind": "redis", "name": "x", "url": "redis://:pw@h/0"}, "sinks.0.url: no password"),
        ({"kind": "kafka", "name": "x", "security_protocol": "SASL_SSL"}, "SASL needs"),
        ({"kind": "nats", "name": "x", "stream": ""}, "sinks.0.stream:"),
    ],
)
def test_a_bad_sink_is_a_config_error_at_its_key_path(sink: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"sinks": [sink]})


def test_sink_names_are_unique_and_secrets_stay_references() -> None:
    twice = [
        {"kind": "jsonl", "name": "a", "path": "x"},
        {"kind": "jsonl", "name": "a", "path": "y"},
    ]
    with pytest.raises(ConfigError, match="sinks.1.name: another sink is named 'a'"):
        parse_config({"sinks": twice})
    os.environ[HOOK_ENV + "_UNIT"] = "http://127.0.0.1:9/" + HOOK_TOKEN
    try:
        config = parse_config(
            {"sinks": [{"kind": "webhook", "name": "h", "url": "${" + HOOK_ENV + "_UNIT}"}]}
        )
    finally:
        del os.environ[HOOK_ENV + "_UNIT"]
    _no_secret(repr(config) + config.model_dump_json())
    assert config.sinks[0].url.reveal().endswith(HOOK_TOKEN)


# --- delivery: batching, retries, counters (in process, a sink kind of the test's own) --------


class FlakySink:
    """A sink kind that fails its first `failures` deliveries, then records each batch."""

    max_batch: int | None = None

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[list[Any]] = []

    async def send(self, events: list[Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker went away")
        self.batches.append([e.data for e in events])

    async def close(self) -> None:
        return None


def _row(n: int) -> Any:
    from turnout.accounting.records import LedgerRow

    row = LedgerRow(f"req{n}", 1.0, "chat", "openai", False, 200, "ok", model="backup")
    row.attempts = [{"model": "primary", "reason": "server_error(500)"}]
    return row


async def _delivered_through(sink: FlakySink, events: int, **settings: Any) -> Any:
    from turnout.config.secrets import SecretRedactor
    from turnout.config.sinks import JsonlSinkConfig
    from turnout.events import EventBus, RequestFinished
    from turnout.sinks import SinkWorker

    config = JsonlSinkConfig(name="t", path="unused", backoff="10ms", **settings)
    bus = EventBus()
    worker = SinkWorker(config, sink, lambda: SecretRedactor([]))
    worker.subscribe(bus)
    for n in range(events):  # published before the bus starts: all waiting in the queue
        bus.publish(RequestFinished(_row(n)))
    await bus.start()
    await bus.close()  # drains the queue
    return worker, bus


async def test_waiting_events_go_out_in_batches_in_order() -> None:
    sink = FlakySink()
    worker, _ = await _delivered_through(sink, 250, batch=100)
    assert [len(b) for b in sink.batches] == [100, 100, 50]
    assert [e["request_id"] for b in sink.batches for e in b] == [f"req{n}" for n in range(250)]
    assert worker.stats() == {"delivered": 250, "failed": 0, "dropped": 0, "errors": 0, "queued": 0}


async def test_a_failed_delivery_is_retried_then_dropped_and_counted() -> None:
    sink = FlakySink(failures=2)
    worker, _ = await _delivered_through(sink, 1, retries=2)
    assert len(sink.batches) == 1  # the third try went through
    assert worker.stats()["delivered"] == 1 and worker.stats()["errors"] == 2

    dead = FlakySink(failures=1000)
    worker, bus = await _delivered_through(dead, 3, retries=1, max_queue=2)
    stats = worker.stats()
    # one event never fitted in the queue; the two others failed both their tries
    assert stats == {"delivered": 0, "failed": 2, "dropped": 1, "errors": 2, "queued": 0}
    assert bus.stats()["subscribers"]["sink:t"]["errors"] == 1  # the batch the bus saw fail


@pytest.mark.parametrize(("kind", "module"), [("nats", "nats"), ("kafka", "aiokafka")])
def test_a_sink_whose_library_is_missing_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, kind: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what Python sees when it is not installed
    with pytest.raises(ConfigError, match=r"sinks\.0: .*pip install 'turnout\[sinks\]'"):
        parse_config({"sinks": [{"kind": kind, "name": "x"}]})
