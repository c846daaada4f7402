"""Hedged requests (issue 16): a slow first attempt gets a second one on the route's next
target; the first to answer wins, the other is cancelled and its upstream connection closed;
hedges stay within the route's `max_extra`; a client error is never hedged."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.conftest import http, ledger_rows, sdk_client, sim_config
from tests.upstreams import SIM_ANTHROPIC_ENV, serve_app, shared_sim

FAST_REPLY = "Hello from the simulator."
SLOW_REPLY = "the slow answer"


class SlowUpstream:
    """An upstream that takes `delay` seconds to its first token (or its whole answer, or
    its error) and records each request whose client went away before then."""

    def __init__(self, delay: float, status: int = 200, anthropic_usage: int | None = None):
        self.delay = delay
        self.status = status
        # the Anthropic wire: message_start (with this many input tokens) at once, then wait
        self.anthropic_usage = anthropic_usage
        self.requests = 0
        self.abandoned = 0
        self._gone = threading.Condition()

    def wait_abandoned(self, count: int, timeout: float = 10) -> bool:
        with self._gone:
            return self._gone.wait_for(lambda: self.abandoned >= count, timeout)

    async def _waited(self, request: web.Request) -> bool:
        """Wait out the delay; False when the client closed the connection first."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.delay
        while loop.time() < end:
            transport = request.transport
            if transport is None or transport.is_closing():
                with self._gone:
                    self.abandoned += 1
                    self._gone.notify_all()
                return False
            await asyncio.sleep(0.01)
        return True

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.json()
        if self.anthropic_usage is not None:
            return await self._anthropic(request)
        if not body.get("stream"):
            if not await self._waited(request):
                return web.Response()
            if self.status != 200:
                error = {"message": "bad request: nope", "type": "invalid_request_error"}
                return web.json_response({"error": error}, status=self.status)
            message = {"role": "assistant", "content": SLOW_REPLY}
            choice = {"index": 0, "finish_reason": "stop", "message": message}
            usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
            answer = {"id": "x", "object": "chat.completion", "created": 0, "model": "m"}
            return web.json_response({**answer, "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)  # headers at once; the first token takes its time
        if not await self._waited(request):
            return response
        choice = {"index": 0, "delta": {"content": SLOW_REPLY}, "finish_reason": "stop"}
        chunk = {"id": "x", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
        await response.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
        return response

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        usage = {"input_tokens": self.anthropic_usage, "output_tokens": 1}
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m"}
        message |= {"content": [], "stop_reason": None, "usage": usage}
        start = {"type": "message_start", "message": message}
        await response.write(f"event: message_start\ndata: {json.dumps(start)}\n\n".encode())
        await self._waited(request)  # the test's hedge always wins before the delay is out
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{path:.*}", self.handle)
        return app


def _config(port: int, hedge: dict[str, Any], **fast: Any) -> dict[str, Any]:
    """Route `chat`: `scout` on the slow upstream, hedged to `haiku` on the simulator."""
    config = sim_config(
        {"haiku": fast},
        {"chat": {"targets": ["scout", "haiku"], "hedge": hedge}},
        prices={"haiku": {"input": 1.0, "output": 2.0}},
    )
    config["providers"]["slow"] = {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}
    config["models"]["scout"] = {"provider": "slow", "price": {"input": 3.0, "output": 15.0}}
    return config


def _ledger(gateway: Any, tmp_path: Path) -> list[Any]:
    gateway.stop()  # the ledger is drained on exit
    return ledger_rows("sqlite", str(tmp_path / "turnout.db"))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_slow_first_attempt_is_hedged_and_the_fast_answer_wins(
    gateway_factory, tmp_path, stream
) -> None:
    slow = SlowUpstream(delay=8)
    with serve_app(slow.app()) as port:
        gateway = gateway_factory(_config(port, {"after": "100ms"}))
        client = sdk_client(gateway)
        messages = [{"role": "user", "content": "hello"}]
        if stream:
            with client.chat.completions.with_streaming_response.create(
                model="chat", messages=messages, stream=True
            ) as response:
                chunks = list(response.parse())
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                headers = response.headers
        else:
            raw = client.chat.completions.with_raw_response.create(model="chat", messages=messages)
            text, headers = raw.parse().choices[0].message.content, raw.headers
        assert text == FAST_REPLY
        assert headers["x-turnout-model"] == "haiku"
        assert headers["x-turnout-hedged"] == "scout>haiku; winner=haiku"
        assert headers["x-turnout-attempts"] == "2"
        assert slow.wait_abandoned(1), "the losing attempt's upstream connection stayed open"
        [row] = _ledger(gateway, tmp_path)
    assert row.model == "haiku" and row.outcome == "ok"
    [lost] = row.attempts
    assert lost["model"] == "scout" and lost["reason"] == "hedged(lost)"
    assert lost["primary"] == "scout" and lost["hedge"] == "haiku"
    assert lost["cost_usd"] is None  # it was cancelled before its upstream said what it used


def test_a_fast_first_attempt_is_not_hedged(gateway_factory) -> None:
    slow = SlowUpstream(delay=0.05)
    with serve_app(slow.app()) as port:
        gateway = gateway_factory(_config(port, {"after": "2s"}))
        raw = sdk_client(gateway).chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.parse().choices[0].message.content == SLOW_REPLY
        assert "x-turnout-hedged" not in raw.headers
        assert raw.headers["x-turnout-model"] == "scout"
        assert raw.headers["x-turnout-attempts"] == "1"


def _two_upstreams(first_port: int, port: int) -> dict[str, Any]:
    """Route `chat`: `scout` on the first port, hedged after 100ms to `haiku` on the other."""
    config = _config(first_port, {"after": "100ms"})
    config["providers"]["other"] = {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}
    config["models"]["haiku"] = {"provider": "other"}
    return config


def test_a_first_attempt_that_answers_first_wins_and_the_hedge_is_cancelled(
    gateway_factory, tmp_path
) -> None:
    first, hedge = SlowUpstream(delay=0.6), SlowUpstream(delay=8)
    with serve_app(first.app()) as first_port, serve_app(hedge.app()) as port:
        gateway = gateway_factory(_two_upstreams(first_port, port))
        raw = sdk_client(gateway).chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.parse().choices[0].message.content == SLOW_REPLY
        assert raw.headers["x-turnout-model"] == "scout"
        assert raw.headers["x-turnout-hedged"] == "scout>haiku; winner=scout"
        assert hedge.requests == 1
        assert hedge.wait_abandoned(1), "the losing hedge's upstream connection stayed open"
        [row] = _ledger(gateway, tmp_path)
    assert row.model == "scout"
    assert [(a["model"], a["reason"]) for a in row.attempts] == [("haiku", "hedge(lost)")]


def test_a_first_attempt_failing_during_the_race_leaves_the_hedge_as_the_failover(
    gateway_factory, tmp_path
) -> None:
    first, hedge = SlowUpstream(delay=0.3, status=500), SlowUpstream(delay=0.8)
    with serve_app(first.app()) as first_port, serve_app(hedge.app()) as port:
        gateway = gateway_factory(_two_upstreams(first_port, port))
        raw = sdk_client(gateway).chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.parse().choices[0].message.content == SLOW_REPLY
        assert raw.headers["x-turnout-model"] == "haiku"
        assert raw.headers["x-turnout-hedged"] == "scout>haiku; winner=haiku"
        assert raw.headers["x-turnout-attempts"] == "2"
        assert hedge.requests == 1  # the hedge carried on: no second try at haiku
        [row] = _ledger(gateway, tmp_path)
    assert [(a["model"], a["reason"]) for a in row.attempts] == [("scout", "server_error(500)")]


def test_the_losers_reported_cost_is_in_the_ledger(gateway_factory, tmp_path) -> None:
    """An Anthropic stream says its input tokens before its first token: a hedge that beat
    it leaves that cost in the ledger."""
    slow = SlowUpstream(delay=8, anthropic_usage=1000)
    with serve_app(slow.app()) as port:
        config = _config(port, {"after": "100ms"})
        config["providers"]["slow"] = {
            "kind": "anthropic",
            "base_url": f"http://127.0.0.1:{port}",
            "api_key": "${SIM_ANTHROPIC_KEY}",
        }
        gateway = gateway_factory(config, env=SIM_ANTHROPIC_ENV)
        with sdk_client(gateway).chat.completions.with_streaming_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        ) as response:
            text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
            assert response.headers["x-turnout-hedged"] == "scout>haiku; winner=haiku"
        assert text == FAST_REPLY
        assert slow.wait_abandoned(1)
        [row] = _ledger(gateway, tmp_path)
    [lost] = row.attempts
    assert lost["reason"] == "hedged(lost)"
    assert lost["cost_usd"] == pytest.approx((1000 * 3.0 + 1 * 15.0) / 1_000_000)


def test_hedges_stay_within_max_extra_while_the_primary_stays_slow(gateway_factory) -> None:
    requests, max_extra = 20, 0.1
    with shared_sim({"scout": {"ttft": 0.3}, "haiku": {}}) as sim:
        config = {
            "providers": {"sim": {"kind": "openai", "base_url": sim.base_url}},
            "models": {"scout": {"provider": "sim"}, "haiku": {"provider": "sim"}},
            "routes": {
                "chat": {
                    "targets": ["scout", "haiku"],
                    "hedge": {"after": "50ms", "max_extra": max_extra},
                }
            },
        }
        gateway = gateway_factory(config)
        client = sdk_client(gateway)
        hedged = 0
        for _ in range(requests):
            raw = client.chat.completions.with_raw_response.create(
                model="chat", messages=[{"role": "user", "content": "hi"}]
            )
            hedged += "x-turnout-hedged" in raw.headers
        # the bucket starts with one hedge and each request earns max_extra of another
        assert 2 <= hedged <= 1 + max_extra * requests, hedged
        assert sim.requests("haiku") == hedged  # no hedge went unannounced
        assert sim.requests("scout") == requests


def test_a_client_error_is_never_hedged(gateway_factory) -> None:
    with shared_sim({"scout": {"error_rate": {400: 1.0}}, "haiku": {}}) as sim:
        config = {
            "providers": {"sim": {"kind": "openai", "base_url": sim.base_url}},
            "models": {"scout": {"provider": "sim"}, "haiku": {"provider": "sim"}},
            "routes": {"chat": {"targets": ["scout", "haiku"], "hedge": {"after": "50ms"}}},
        }
        gateway = gateway_factory(config)
        for _ in range(3):
            with pytest.raises(openai.BadRequestError):
                sdk_client(gateway).chat.completions.create(
                    model="chat", messages=[{"role": "user", "content": "hi"}]
                )
        assert sim.requests("haiku") == 0


def test_a_client_error_during_the_race_ends_it(gateway_factory) -> None:
    """The first attempt's 400 arrives after the hedge started: the client gets the 400 at
    once (the hedge would fail the same way), not the hedge's answer, and the hedge is
    cancelled."""
    slow = SlowUpstream(delay=0.5, status=400)
    hedge = SlowUpstream(delay=8)
    with serve_app(slow.app()) as port, serve_app(hedge.app()) as hedge_port:
        config = _config(port, {"after": "100ms"})
        config["providers"]["other"] = {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{hedge_port}/v1",
        }
        config["models"]["haiku"] = {"provider": "other"}
        gateway = gateway_factory(config)
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        result = http("POST", gateway.base_url + "/chat/completions", json.dumps(body).encode())
        assert result.status == 400, result.body
        assert "nope" in result.json()["error"]["message"]
        assert hedge.requests == 1
        assert hedge.wait_abandoned(1)


def test_after_p95_uses_healths_figure(gateway_factory) -> None:
    """With `after: p95` the hedge starts at the target's recent TTFT p95, not at the floor
    (here far longer than the primary's slowdown)."""
    with shared_sim({"scout": {"ttft": 0.1}, "haiku": {}}) as sim:
        config = {
            "providers": {"sim": {"kind": "openai", "base_url": sim.base_url}},
            "models": {"scout": {"provider": "sim"}, "haiku": {"provider": "sim"}},
            "routes": {
                "chat": {
                    "targets": ["scout", "haiku"],
                    "hedge": {"after": "p95", "floor": "30s", "max_extra": 1.0},
                }
            },
        }
        gateway = gateway_factory(config)
        client = sdk_client(gateway)

        def streamed() -> Any:
            with client.chat.completions.with_streaming_response.create(
                model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
            ) as response:
                list(response.parse())
                return response.headers

        for _ in range(20):  # health's samples of scout's TTFT (hedge.MIN_SAMPLES)
            assert "x-turnout-hedged" not in streamed()
        p95 = gateway.get("/health/providers").json()["models"]["scout"]["ttft_p95_ms"]
        assert p95 is not None and p95 < 1000
        sim.set("scout", ttft=3.0)  # slower than its p95, far quicker than the floor
        assert streamed()["x-turnout-hedged"] == "scout>haiku; winner=haiku"


def test_the_sims_heavy_tailed_ttft_is_seeded_and_leaves_faults_as_they_were() -> None:
    """The benchmark's upstream: lognormal around a median, a slow share ten times slower,
    the same for the same seed, and the fault sequence of a seed unchanged by it."""
    from turnout.sim.schema import SimBehaviour
    from turnout.sim.state import ModelState

    faults = {"error_rate": {500: 0.3}}
    heavy = SimBehaviour(
        ttft=0.8, ttft_distribution="lognormal", ttft_sigma=0.3, slow_rate=0.05, **faults
    )

    def draws(behaviour: SimBehaviour, seed: int) -> list[Any]:
        model = ModelState("m", behaviour, seed)
        return [model.draw(False) for _ in range(4000)]

    first = draws(heavy, 7)
    ttfts = sorted(d.ttft for d in first)
    assert ttfts == sorted(d.ttft for d in draws(heavy, 7))
    assert ttfts != sorted(d.ttft for d in draws(heavy, 8))
    assert 0.76 < ttfts[len(ttfts) // 2] < 0.84
    slow_share = sum(t > 3.0 for t in ttfts) / len(ttfts)
    assert 0.04 < slow_share < 0.06
    plain = draws(SimBehaviour(ttft=0.8, **faults), 7)
    assert [d.fault for d in first] == [d.fault for d in plain]
