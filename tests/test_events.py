"""The event bus (issue 12, item 3): typed events published by the core, health and the
ledger as inline subscribers, queued subscribers that drop (and count) rather than slow a
request, and failures that stay with their subscriber. Unit tests of the bus and of health's
HealthChanged events, then a real gateway process and an in-process gateway on a real port,
both in front of the simulator, driven by the openai SDK."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import ask, free_port
from tests.services import redis_url
from tests.upstreams import shared_sim
from turnout.config import parse_config
from turnout.config.schema import HealthConfig
from turnout.events import (
    AttemptFinished,
    BudgetAlert,
    EventBus,
    HealthChanged,
    HealthState,
    RequestFinished,
)
from turnout.gateway import Gateway
from turnout.health import HealthEngine
from turnout.health.state import make_store
from turnout.model import ErrorClass, Outcome
from turnout.server import GatewayServer

HEALTHY = {"reply": "primary answered", "tokens_per_second": 5000}
BACKUP = {"reply": "backup answered", "tokens_per_second": 5000}
FAST_HEALTH = {
    "breaker": {"consecutive_failures": 3, "open_for": "1s", "max_open_for": "2s"},
    "probe_interval": "100ms",
}


def _outcome(model: str = "alpha", ok: bool = True, **fields: Any) -> Outcome:
    return Outcome("chat", model, "sim", ok=ok, **fields)


# --- the bus ---------------------------------------------------------------------------------


def test_inline_subscribers_see_their_kinds_in_order_during_publish() -> None:
    bus, seen, others = EventBus(), [], []
    bus.subscribe(seen.append, kinds=(AttemptFinished, RequestFinished), inline=True, name="a")
    bus.subscribe(others.append, kinds=(BudgetAlert,), inline=True, name="b")
    events = [AttemptFinished(_outcome()), RequestFinished("row"), AttemptFinished(_outcome())]
    for event in events:
        bus.publish(event)
        assert seen[-1] is event  # synchronously, inside publish
    assert seen == events and others == []
    stats = bus.stats()
    assert stats["published"] == 3
    assert stats["subscribers"]["a"] == {"delivered": 3, "dropped": 0, "errors": 0, "queued": 0}
    assert stats["subscribers"]["b"]["delivered"] == 0


async def test_queued_subscribers_run_on_their_own_task_in_order() -> None:
    bus, seen = EventBus(), []
    await bus.start()
    bus.subscribe(seen.append, kinds=(RequestFinished,), name="queued")
    events = [RequestFinished(n) for n in range(50)]
    for event in events:
        bus.publish(event)
    assert seen == []  # publish only queued them
    await asyncio.sleep(0.05)
    assert seen == events
    assert bus.stats()["subscribers"]["queued"]["delivered"] == 50
    await bus.close()


async def test_a_slow_subscriber_drops_and_counts_without_holding_publish() -> None:
    bus, fast, slow = EventBus(), [], []

    async def crawl(event: Any) -> None:
        await asyncio.sleep(0.02)
        slow.append(event)

    await bus.start()
    bus.subscribe(crawl, kinds=(AttemptFinished,), max_queue=5, name="slow")
    bus.subscribe(fast.append, kinds=(AttemptFinished,), inline=True, name="fast")
    for _ in range(100):
        bus.publish(AttemptFinished(_outcome()))
    # publish returned 100 times while the slow subscriber had handled nothing at all
    assert len(fast) == 100 and slow == []
    stats = bus.stats()["subscribers"]
    assert stats["slow"]["dropped"] == 95 and stats["slow"]["queued"] == 5
    assert stats["fast"] == {"delivered": 100, "dropped": 0, "errors": 0, "queued": 0}
    await bus.close()  # lets the queue drain first
    assert len(slow) == 5 and bus.stats()["subscribers"]["slow"]["delivered"] == 5


async def test_a_raising_subscriber_is_counted_and_contained(caplog) -> None:
    bus, after = EventBus(), []

    def broken(_: Any) -> None:
        raise RuntimeError("subscriber bug")

    async def broken_async(_: Any) -> None:
        raise RuntimeError("async subscriber bug")

    await bus.start()
    bus.subscribe(broken, kinds=(RequestFinished,), inline=True, name="inline")
    bus.subscribe(broken_async, kinds=(RequestFinished,), name="queued")
    bus.subscribe(after.append, kinds=(RequestFinished,), inline=True, name="after")
    for n in range(3):
        bus.publish(RequestFinished(n))  # never raises
    await asyncio.sleep(0.05)
    stats = bus.stats()["subscribers"]
    assert stats["inline"]["errors"] == 3 and stats["inline"]["delivered"] == 0
    assert stats["queued"]["errors"] == 3
    assert len(after) == 3  # the next subscriber still got every event
    # logged once, not once per event
    assert caplog.text.count("event subscriber inline failed") == 1
    await bus.close()


def test_inline_subscribers_must_be_synchronous() -> None:
    async def handler(_: Any) -> None: ...

    with pytest.raises(ValueError, match="synchronous"):
        EventBus().subscribe(handler, kinds=(RequestFinished,), inline=True)


# --- health's transitions ------------------------------------------------------------------------


def test_health_engine_announces_each_transition() -> None:
    bus, changes = EventBus(), []
    bus.subscribe(changes.append, kinds=(HealthChanged,), inline=True)
    engine = HealthEngine(HealthConfig.model_validate(FAST_HEALTH), publish=bus.publish)
    engine.register("alpha", "sim")
    fail = {"ok": False, "error_class": ErrorClass.SERVER_ERROR, "status": 500, "started": 10.0}
    for _ in range(3):
        engine.record(_outcome(**fail))
    assert engine.skip_reason("alpha", 10.5) is not None  # still open: nothing new
    assert engine.skip_reason("alpha", 11.5) is None  # the half-open probe
    engine.record(_outcome(started=11.5))
    engine.record(_outcome(ok=False, error_class=ErrorClass.RATE_LIMITED, started=20.0))
    assert engine.skip_reason("alpha", 20.5) is not None  # cooling down
    assert engine.skip_reason("alpha", 21.5) is None
    engine.record(_outcome(ok=False, error_class=ErrorClass.AUTH, status=401, started=30.0))
    engine.record(_outcome(started=40.0))
    assert [(c.model, c.provider, c.state, c.reason) for c in changes] == [
        ("alpha", "sim", HealthState.OPENED, "server_error"),
        ("alpha", "sim", HealthState.HALF_OPEN, "open period over"),
        ("alpha", "sim", HealthState.CLOSED, "probe succeeded"),
        ("alpha", "sim", HealthState.COOLDOWN_STARTED, "rate_limited"),
        ("alpha", "sim", HealthState.COOLDOWN_ENDED, "rate_limited"),
        (None, "sim", HealthState.MISCONFIGURED, "HTTP 401 from model alpha: None"),
        (None, "sim", HealthState.RECOVERED, "HTTP 401 from model alpha: None"),
    ]
    assert [c.at for c in changes] == [10.0, 11.5, 11.5, 20.0, 21.5, 30.0, 40.0]


async def test_states_adopted_from_another_process_are_announced_too() -> None:
    """Two health engines sharing state through the real Redis: a breaker the first opens,
    and a misconfiguration it finds, reach the second's bus as HealthChanged events."""
    prefix = f"turnout-test-{uuid.uuid4().hex[:8]}"
    config = HealthConfig.model_validate(FAST_HEALTH)
    engines, changes = [], []
    for _ in range(2):
        bus, seen = EventBus(), []
        bus.subscribe(seen.append, kinds=(HealthChanged,), inline=True)
        engine = HealthEngine(config, make_store("redis", redis_url(), prefix), publish=bus.publish)
        engine.register("alpha", "sim")
        await engine.start()
        engines.append(engine)
        changes.append(seen)
    first = engines[0]
    try:
        now = time.time()
        fail = {"ok": False, "error_class": ErrorClass.SERVER_ERROR, "status": 500}
        for _ in range(3):
            first.record(_outcome(started=now, **fail))
        first.record(_outcome(ok=False, error_class=ErrorClass.AUTH, status=401, started=now))
        await _until(lambda: len(changes[1]) >= 2)
        # two documents of the shared state, adopted in the order Redis returns them
        adopted = {(c.model, c.provider, c.state, c.reason) for c in changes[1]}
        assert adopted == {
            ("alpha", "sim", HealthState.OPENED, "shared by another gateway process"),
            (None, "sim", HealthState.MISCONFIGURED, "HTTP 401 from model alpha: None"),
        }
        assert [c.state for c in changes[0]] == [HealthState.OPENED, HealthState.MISCONFIGURED]
    finally:
        for engine in engines:
            await engine.close()


async def _until(predicate: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


# --- end to end ------------------------------------------------------------------------------------


def _config(sim: Any) -> dict[str, Any]:
    return {
        "providers": {"sim": {"kind": "openai", "base_url": sim.base_url}},
        "models": {"primary": {"provider": "sim"}, "backup": {"provider": "sim"}},
        "routes": {"chat": {"targets": ["primary", "backup"]}},
        "health": FAST_HEALTH,
    }


def _wait_for(predicate: Any, timeout: float, step: float = 0.1) -> None:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "condition not reached in time"
        time.sleep(step)


def test_health_endpoint_counts_the_events_of_an_outage(gateway_factory) -> None:
    with shared_sim({"primary": HEALTHY, "backup": BACKUP}) as sim:
        gateway = gateway_factory(_config(sim))
        sim.set("primary", error_rate={"500": 1.0})
        for _ in range(3):
            assert ask(gateway)[0] == "backup answered"
        sim.set("primary", **HEALTHY)
        _wait_for(lambda: ask(gateway)[0] == "primary answered", timeout=5.0)
        events = gateway.get("/health").json()["events"]
        subscribers = events["subscribers"]
        # 3 failed and 3 good attempts, 3 requests, opened: at the least
        assert events["published"] >= 10
        assert subscribers["health"]["delivered"] >= 6
        assert subscribers["ledger"]["delivered"] >= 4
        assert all(s["dropped"] == 0 and s["errors"] == 0 for s in subscribers.values())


async def test_an_in_process_subscriber_sees_the_outage_and_the_recovery(tmp_path) -> None:
    with shared_sim({"primary": HEALTHY, "backup": BACKUP}) as sim:
        config = {**_config(sim), "data_dir": str(tmp_path), "ledger": {"backend": "off"}}
        gateway = Gateway(parse_config(config))
        seen: list[Any] = []
        gateway.bus.subscribe(seen.append, kinds=(AttemptFinished, RequestFinished, HealthChanged))
        await gateway.start()
        server = GatewayServer(gateway, "127.0.0.1", free_port())
        await server.start()
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0
        )

        def chat() -> str:
            answer = client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hi"}]
            )
            return answer.choices[0].message.content or ""

        try:
            sim.set("primary", error_rate={"500": 1.0})
            for _ in range(3):
                assert await asyncio.to_thread(chat) == "backup answered"
            sim.set("primary", **HEALTHY)
            requests = 3
            deadline = time.monotonic() + 5
            while await asyncio.to_thread(chat) != "primary answered":
                requests += 1
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            requests += 1
            await asyncio.sleep(0.05)  # the queued subscriber catches up
        finally:
            await server.close()
            await gateway.close()

    changes = [(e.model, e.state) for e in seen if isinstance(e, HealthChanged)]
    assert changes[0] == ("primary", HealthState.OPENED)
    assert changes[-1] == ("primary", HealthState.CLOSED)
    finished = [e for e in seen if isinstance(e, RequestFinished)]
    assert len(finished) == requests
    # the first request: its two attempts, then the request itself
    first = [(type(e), getattr(e, "outcome", None)) for e in seen[:3]]
    assert [kind for kind, _ in first] == [AttemptFinished, AttemptFinished, RequestFinished]
    attempts = [e.outcome for e in seen if isinstance(e, AttemptFinished)]
    tried = [(o.model, o.ok) for o in attempts if not o.probe]
    assert tried[:6] == [("primary", False), ("backup", True)] * 3
    assert tried[-1] == ("primary", True)
    assert sum(1 for e in finished if e.row.model == "backup") == requests - 1


def test_a_plugin_subscribes_to_every_gateway_it_is_loaded_into(gateway_factory) -> None:
    """TURNOUT_PLUGINS names a module that registers a subscriber: the gateway process
    attaches it to its bus, and it is given each attempt and each request."""
    root = str(Path(__file__).resolve().parent.parent)
    plugin = {"TURNOUT_PLUGINS": "tests.counting_plugin", "PYTHONPATH": root}
    with shared_sim({"primary": HEALTHY, "backup": BACKUP}) as sim:
        gateway = gateway_factory(_config(sim), env=plugin)
        for _ in range(3):
            assert ask(gateway)[0] == "primary answered"
        plain = gateway_factory(_config(sim))
        assert "test-counter" not in plain.get("/health").json()["events"]["subscribers"]

        def delivered() -> int:
            subscribers = gateway.get("/health").json()["events"]["subscribers"]
            return subscribers["test-counter"]["delivered"]

        _wait_for(lambda: delivered() == 6, timeout=3.0)  # 3 attempts, 3 requests
