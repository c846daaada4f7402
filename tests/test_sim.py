"""The simulator over real HTTP, driven by the official OpenAI SDK: answers, streams, tool
calls, every fault it can inject, seeded repeatability and the /sim control routes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from turnout.config import ConfigError
from turnout.config.schema import Timeouts
from turnout.model import Request
from turnout.providers.base import Call
from turnout.providers.sim import SimConfig, SimProvider
from turnout.sim import load_sim_file, make_sim_app
from turnout.sim.schema import SimBehaviour
from turnout.sim.state import STATE

MESSAGES = [{"role": "user", "content": "What is the weather like in Lisbon today?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "verbose": {"type": "boolean"},
            },
            "required": ["city", "days", "unit"],
        },
    },
}
FAST = {"tokens_per_second": 10_000}


class Sim:
    """One sim app on a real ephemeral port, with an SDK client and admin helpers."""

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self.runner = runner
        self.root = f"http://127.0.0.1:{port}"
        self.base_url = self.root + "/v1"
        self.clients: list[openai.AsyncOpenAI] = []

    def client(self, timeout: float = 10.0) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key="x", max_retries=0, timeout=timeout
        )
        self.clients.append(client)  # closed by the fixture, inside the loop
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        await self.runner.cleanup()

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.root + path, json=body) as response,
        ):
            return response.status, await response.json()

    async def stats(self) -> dict[str, Any]:
        return (await self.admin("GET", "/sim/stats"))[1]


SimFactory = Callable[..., Awaitable[Sim]]


@pytest.fixture
async def sim() -> AsyncIterator[SimFactory]:
    """`await sim({"name": {behaviour fields}}, seed=0)` -> a running Sim; all stop after."""
    sims: list[Sim] = []

    async def start(models: dict[str, dict[str, Any]], seed: int = 0) -> Sim:
        behaviours = {name: SimBehaviour.model_validate(spec) for name, spec in models.items()}
        runner = web.AppRunner(make_sim_app(behaviours, seed), shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        sims.append(Sim(runner, runner.addresses[0][1]))
        return sims[-1]

    yield start
    for started in sims:
        await started.close()


async def _statuses(client: openai.AsyncOpenAI, model: str, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        try:
            await client.chat.completions.create(model=model, messages=MESSAGES)
            statuses.append(200)
        except openai.APIStatusError as exc:
            statuses.append(exc.status_code)
    return statuses


# --- answers -------------------------------------------------------------------------------


async def test_plain_answer_with_usage_and_ratelimit_headers(sim: SimFactory) -> None:
    s = await sim({"scout": {"reply": "The sky is clear today.", "ratelimit_remaining": 42}})
    raw = await s.client().chat.completions.with_raw_response.create(
        model="scout", messages=MESSAGES
    )
    answer = raw.parse()
    assert answer.object == "chat.completion"
    assert answer.model == "scout"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == "The sky is clear today."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 5  # word-ish tokens
    # the gateway's own estimate (model/tokens.py): ~4 characters a token, +4 a message
    assert answer.usage.prompt_tokens == len(MESSAGES[0]["content"]) // 4 + 4
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 5
    assert raw.headers["x-ratelimit-remaining-requests"] == "42"
    assert raw.headers["x-ratelimit-limit-requests"] == "42"
    assert raw.headers["x-ratelimit-reset-requests"] == "1s"


async def test_stream_with_include_usage(sim: SimFactory) -> None:
    s = await sim({"scout": {"reply": "one two three", **FAST}})
    stream = await s.client().chat.completions.create(
        model="scout", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_without_include_usage_sends_no_usage(sim: SimFactory) -> None:
    s = await sim({"scout": FAST})
    stream = await s.client().chat.completions.create(model="scout", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.usage is None and c.choices for c in chunks)


async def test_max_tokens_truncates_with_finish_reason_length(sim: SimFactory) -> None:
    s = await sim({"scout": {"reply": "a b c d e f", **FAST}})
    answer = await s.client().chat.completions.create(
        model="scout", messages=MESSAGES, max_tokens=2
    )
    assert answer.choices[0].message.content == "a b"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 2


async def test_ttft_and_pacing(sim: SimFactory) -> None:
    s = await sim({"slow": {"ttft": "200ms", "tokens_per_second": 20, "reply": "a b c d e"}})
    started = time.monotonic()
    stream = await s.client().chat.completions.create(model="slow", messages=MESSAGES, stream=True)
    arrivals = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 5
    assert 0.19 <= arrivals[0] < 0.6
    assert arrivals[-1] - arrivals[0] >= 0.19  # 4 more tokens at 20/s


async def test_unknown_model_is_404_model_not_found(sim: SimFactory) -> None:
    s = await sim({"scout": {}})
    with pytest.raises(openai.NotFoundError) as missing:
        await s.client().chat.completions.create(model="nope", messages=MESSAGES)
    assert missing.value.code == "model_not_found"
    assert missing.value.body["type"] == "invalid_request_error"
    assert "nope" in missing.value.message


async def test_models_list(sim: SimFactory) -> None:
    s = await sim({"scout": {}, "heavy": {}})
    models = [m.id async for m in s.client().models.list()]
    assert sorted(models) == ["heavy", "scout"]


# --- tool calls and JSON -------------------------------------------------------------------


async def test_tool_call_not_streamed(sim: SimFactory) -> None:
    s = await sim({"scout": FAST})
    answer = await s.client().chat.completions.create(
        model="scout", messages=MESSAGES, tools=[WEATHER_TOOL]
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "sim", "days": 1, "unit": "celsius"}
    assert answer.usage is not None and answer.usage.completion_tokens > 0


async def test_tool_call_streamed(sim: SimFactory) -> None:
    s = await sim({"scout": FAST})
    stream = await s.client().chat.completions.create(
        model="scout", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True
    )
    deltas = [c.choices[0] async for c in stream if c.choices]
    first = deltas[0].delta.tool_calls[0]
    assert first.index == 0 and first.id and first.type == "function"
    assert first.function.name == "get_weather" and first.function.arguments == ""
    fragments = [d.delta.tool_calls[0] for d in deltas[1:] if d.delta.tool_calls]
    assert len(fragments) > 1
    assert all(f.id is None and f.function.name is None for f in fragments)
    arguments = "".join(f.function.arguments for f in fragments)
    assert json.loads(arguments)["city"] == "sim"
    assert deltas[-1].finish_reason == "tool_calls"


async def test_tool_choice_none_answers_in_text(sim: SimFactory) -> None:
    s = await sim({"scout": {"reply": "no tools", **FAST}})
    answer = await s.client().chat.completions.create(
        model="scout", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert answer.choices[0].message.content == "no tools"
    assert not answer.choices[0].message.tool_calls


async def test_json_mode_valid_and_malformed(sim: SimFactory) -> None:
    s = await sim({"good": FAST, "broken": {"malformed_rate": 1.0, **FAST}})
    client = s.client()
    answer = await client.chat.completions.create(
        model="good", messages=MESSAGES, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(answer.choices[0].message.content), dict)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "address": {"$ref": "#/$defs/address"},
        },
        "required": ["name", "age", "tags", "address"],
        "$defs": {
            "address": {
                "type": "object",
                "properties": {"zip": {"type": "string"}},
                "required": ["zip"],
            }
        },
    }
    answer = await client.chat.completions.create(
        model="good",
        messages=MESSAGES,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    )
    assert json.loads(answer.choices[0].message.content) == {
        "name": "sim",
        "age": 1,
        "tags": ["sim"],
        "address": {"zip": "sim"},
    }
    broken = await client.chat.completions.create(
        model="broken", messages=MESSAGES, response_format={"type": "json_object"}
    )
    content = broken.choices[0].message.content
    assert content.startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)
    # without JSON mode, malformed_rate has nothing to break
    plain = await client.chat.completions.create(model="broken", messages=MESSAGES)
    assert plain.choices[0].message.content == "Hello from the simulator."
    assert (await s.stats())["broken"]["faults"] == {"malformed": 1}


# --- faults --------------------------------------------------------------------------------


async def test_error_rate_500(sim: SimFactory) -> None:
    s = await sim({"dead": {"error_rate": {500: 1.0}}})
    with pytest.raises(openai.InternalServerError) as failed:
        await s.client().chat.completions.create(model="dead", messages=MESSAGES)
    assert failed.value.status_code == 500
    assert failed.value.body["type"] == "server_error"


async def test_error_rate_529_is_overloaded_error(sim: SimFactory) -> None:
    s = await sim({"busy": {"error_rate": {529: 1.0}}})
    with pytest.raises(openai.APIStatusError) as failed:
        await s.client().chat.completions.create(model="busy", messages=MESSAGES)
    assert failed.value.status_code == 529
    assert failed.value.body["type"] == "overloaded_error"


async def test_rate_limit_with_retry_after(sim: SimFactory) -> None:
    s = await sim({"busy": {"rate_limit_rate": 1.0, "retry_after": 2}})
    with pytest.raises(openai.RateLimitError) as limited:
        await s.client().chat.completions.create(model="busy", messages=MESSAGES)
    headers = limited.value.response.headers
    assert headers["retry-after"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "2s"
    assert limited.value.code == "rate_limit_exceeded"


async def test_hang_until_the_client_times_out(sim: SimFactory) -> None:
    s = await sim({"stuck": {"hang_rate": 1.0}})
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await s.client(timeout=0.3).chat.completions.create(model="stuck", messages=MESSAGES)
    assert time.monotonic() - started < 2
    stats = await s.stats()
    assert stats["stuck"] == {"requests": 1, "statuses": {}, "faults": {"hang": 1}}
    await asyncio.sleep(0.2)
    assert not s.runner.app[STATE].tasks  # the hung handler noticed the client leave


async def test_hang_does_not_hold_up_shutdown(sim: SimFactory) -> None:
    s = await sim({"stuck": {"hang_rate": 1.0}})
    request = asyncio.create_task(
        s.client().chat.completions.create(model="stuck", messages=MESSAGES)
    )
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await s.runner.cleanup()
    assert time.monotonic() - started < 1.5
    with pytest.raises(openai.APIConnectionError):
        await request


async def test_disconnect_mid_stream_breaks_the_stream(sim: SimFactory) -> None:
    s = await sim({"flaky": {"disconnect_rate": 1.0, "disconnect_after": 3, **FAST}})
    stream = await s.client().chat.completions.create(model="flaky", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(Exception) as broken:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Hello from"  # role chunk + two tokens, then the drop
    assert "StopAsyncIteration" not in repr(broken.value)


async def test_disconnect_without_streaming_closes_without_answer(sim: SimFactory) -> None:
    s = await sim({"flaky": {"disconnect_rate": 1.0}})
    with pytest.raises(openai.APIConnectionError):
        await s.client().chat.completions.create(model="flaky", messages=MESSAGES)
    assert (await s.stats())["flaky"]["faults"] == {"disconnect": 1}


async def test_outage_window(sim: SimFactory) -> None:
    s = await sim({"down": {"outages": [{"start": 0, "end": "400ms", "status": 503}]}})
    client = s.client()
    with pytest.raises(openai.InternalServerError) as failed:
        await client.chat.completions.create(model="down", messages=MESSAGES)
    assert failed.value.status_code == 503
    await asyncio.sleep(0.5)
    answer = await client.chat.completions.create(model="down", messages=MESSAGES)
    assert answer.choices[0].message.content
    # reset restarts the clock: the outage is back
    await s.admin("POST", "/sim/reset")
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="down", messages=MESSAGES)


async def test_outage_starting_later(sim: SimFactory) -> None:
    s = await sim({"later": {"outages": [{"start": "300ms", "end": "1h", "status": 502}]}})
    client = s.client()
    assert await _statuses(client, "later", 1) == [200]
    await asyncio.sleep(0.35)
    assert await _statuses(client, "later", 1) == [502]


# --- seeds ---------------------------------------------------------------------------------


async def test_same_seed_same_faults_different_seed_different(sim: SimFactory) -> None:
    behaviour = {"coin": {"error_rate": {500: 0.5}, **FAST}}
    first = await sim(behaviour, seed=7)
    second = await sim(behaviour, seed=7)
    other = await sim(behaviour, seed=8)
    a = await _statuses(first.client(), "coin", 50)
    b = await _statuses(second.client(), "coin", 50)
    c = await _statuses(other.client(), "coin", 50)
    assert a == b
    assert a != c
    assert 10 < a.count(500) < 40
    # a reset replays the same sequence
    await first.admin("POST", "/sim/reset")
    assert await _statuses(first.client(), "coin", 50) == a


async def test_models_have_independent_generators(sim: SimFactory) -> None:
    behaviour = {"coin": {"error_rate": {500: 0.5}, **FAST}}
    alone = await sim(behaviour, seed=3)
    mixed = await sim({**behaviour, "other": {"error_rate": {500: 0.5}, **FAST}}, seed=3)
    expected = await _statuses(alone.client(), "coin", 20)
    client = mixed.client()
    interleaved = []
    for _ in range(20):
        interleaved += await _statuses(client, "coin", 1)
        await _statuses(client, "other", 1)  # traffic elsewhere must not shift coin's faults
    assert interleaved == expected


# --- runtime control -----------------------------------------------------------------------


async def test_runtime_patch_via_admin_route(sim: SimFactory) -> None:
    s = await sim({"scout": {"reply": "before", **FAST}})
    client = s.client()
    assert (await client.chat.completions.create(model="scout", messages=MESSAGES)).choices[
        0
    ].message.content == "before"

    status, body = await s.admin("POST", "/sim/models/scout", {"error_rate": {"503": 1.0}})
    assert status == 200 and body["behaviour"]["error_rate"] == {"503": 1.0}
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="scout", messages=MESSAGES)

    status, body = await s.admin("POST", "/sim/models/new/model", {"reply": "fresh", "ttft": "5ms"})
    assert status == 200 and body["model"] == "new/model"
    answer = await client.chat.completions.create(model="new/model", messages=MESSAGES)
    assert answer.choices[0].message.content == "fresh"

    status, body = await s.admin("POST", "/sim/models/scout", {"ttft": "soon"})
    assert status == 400 and "ttft" in body["error"]["message"]
    status, body = await s.admin("POST", "/sim/models/scout", {"no_such_field": 1})
    assert status == 400 and "no_such_field" in body["error"]["message"]

    status, listing = await s.admin("GET", "/sim/models")
    assert status == 200
    assert sorted(listing["models"]) == ["new/model", "scout"]
    assert listing["models"]["new/model"]["ttft"] == 0.005

    status, _ = await s.admin("DELETE", "/sim/models/new/model")
    assert status == 200
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="new/model", messages=MESSAGES)


async def test_stats_count_requests_per_model(sim: SimFactory) -> None:
    s = await sim(
        {
            "dead": {"error_rate": {500: 1.0}},
            "live": FAST,
            "idle": FAST,
        }
    )
    client = s.client()
    await _statuses(client, "dead", 2)
    await _statuses(client, "live", 3)
    stats = await s.stats()
    assert stats["dead"] == {"requests": 2, "statuses": {"500": 2}, "faults": {"error": 2}}
    assert stats["live"] == {"requests": 3, "statuses": {"200": 3}, "faults": {}}
    assert stats["idle"]["requests"] == 0

    status, body = await s.admin("POST", "/sim/reset", {"seed": 5})
    assert status == 200 and body == {"seed": 5}
    assert all(model["requests"] == 0 for model in (await s.stats()).values())


# --- sim files and the provider ------------------------------------------------------------


def test_load_sim_file(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(
        "seed: 7\n"
        "models:\n"
        "  scout: {ttft: 50ms, error_rate: {500: 0.3}}\n"
        "  heavy: {ttft: 2, outages: [{start: 1s, end: 1m, status: 503}]}\n"
    )
    behaviours, seed = load_sim_file(path)
    assert seed == 7
    assert behaviours["scout"].ttft == pytest.approx(0.05)
    assert behaviours["scout"].error_rate == {500: 0.3}
    assert behaviours["heavy"].outages[0].end == 60.0


def test_load_sim_file_errors_name_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  scout: {ttft: soon}\n")
    with pytest.raises(ConfigError) as bad:
        load_sim_file(path)
    message = str(bad.value)
    assert str(path) in message and "models.scout.ttft" in message
    assert "literal" not in message and "function-" not in message

    path.write_text("models: [1, 2]\n")
    with pytest.raises(ConfigError, match="models"):
        load_sim_file(path)
    path.write_text("models: {a: {ttft: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sim_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_sim_file(tmp_path / "missing.yaml")


def test_the_sim_section_is_the_sims_schema_checked_with_the_config() -> None:
    """config/schema.py does not carry the simulator's schema: the sim kind registers it for
    its `sim:` section, and a config holds validated SimBehaviours, errors at their key path."""
    from turnout.config import parse_config, schema

    assert not hasattr(schema, "SimBehaviour") and not hasattr(schema, "SimOutage")
    config = parse_config({"providers": {"up": {"kind": "sim", "sim": {"m": {"ttft": "50ms"}}}}})
    assert config.providers["up"].sim["m"] == SimBehaviour(ttft=0.05)
    with pytest.raises(ConfigError) as bad:
        parse_config({"providers": {"up": {"kind": "sim", "sim": {"m": {"outages": [{}]}}}}}, "f")
    assert str(bad.value) == "f: providers.up.sim.m.outages.0.end: Field required"


def test_sim_provider_checks_a_section_the_config_did_not() -> None:
    # built straight from a raw section (no config load): the provider checks it itself
    config = SimConfig.model_construct(kind="sim", sim={"m": {"ttft": "soon"}}, seed=0)
    with pytest.raises(ConfigError, match=r"^providers\.up\.sim\.m\.ttft: 'soon' is not"):
        SimProvider("up", config)


async def test_sim_provider_serves_over_http() -> None:
    config = SimConfig(kind="sim", seed=1, sim={"up-1": SimBehaviour(reply="via provider")})
    provider = SimProvider("sim", config)
    await provider.start()
    try:
        assert provider.base_url.startswith("http://127.0.0.1:")
        request = Request(model="chat", messages=MESSAGES)
        response = await provider.complete(request, Call("up-1", Timeouts()))
        assert response.content == "via provider"
        assert response.usage.completion_tokens == 2
        text = ""
        async for delta in provider.stream(request, Call("up-1", Timeouts())):
            text += delta.content or ""
        assert text == "via provider"
    finally:
        await provider.close()
