"""Any client dialect fails over to any provider: the openai and anthropic SDKs against a
real gateway, with upstreams speaking OpenAI, Anthropic (the simulator), Gemini (recorded
traffic) and Workers AI (a fake speaking its native format)."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest
import yaml

from tests import vectors
from tests.conftest import http, sdk_client
from tests.test_cloudflare_dialect import MODEL as CF_MODEL
from tests.test_cloudflare_dialect import FakeWorkersAI
from tests.upstreams import (
    SIM_ANTHROPIC_ENV,
    SIM_CAPABLE,
    CassetteUpstream,
    both_dialects,
    serve_app,
    shared_sim,
)

CAPABLE = SIM_CAPABLE
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
    "required": ["city", "temp"],
    "additionalProperties": False,
}


def _config(sim, targets: list[str], primary: dict | None = None) -> dict:
    """`openai-m` on the sim's OpenAI endpoint, `claude-m` on its Anthropic endpoint."""
    return {
        **both_dialects(sim.base_url, openai_extra=primary),
        "routes": {"chat": {"targets": targets}},
    }


ENV = SIM_ANTHROPIC_ENV
BEHAVIOURS = {
    "openai-m": {"reply": "from openai upstream"},
    "claude-m": {"reply": "from claude upstream"},
}


def _openai_answer(gateway, stream: bool, **kwargs):
    client = sdk_client(gateway)
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    if not stream:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=messages, **kwargs
        )
        message = raw.parse().choices[0]
        calls = [(c.function.name, c.function.arguments) for c in message.message.tool_calls or []]
        return message.message.content, calls, message.finish_reason, raw.headers
    with client.chat.completions.with_streaming_response.create(
        model="chat", messages=messages, stream=True, **kwargs
    ) as response:
        text, calls, finish = "", {}, None
        for chunk in response.parse():
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            text += delta.content or ""
            for call in delta.tool_calls or []:
                name, args = calls.get(call.index, ("", ""))
                calls[call.index] = (
                    name or call.function.name or "",
                    args + (call.function.arguments or ""),
                )
            finish = chunk.choices[0].finish_reason or finish
        return text or None, list(calls.values()), finish, response.headers


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_openai_client_to_anthropic_upstream(gateway_factory, stream) -> None:
    with shared_sim(BEHAVIOURS) as sim:
        gateway = gateway_factory(_config(sim, ["claude-m"]), env=ENV)
        text, calls, finish, headers = _openai_answer(gateway, stream)
        assert (text, finish, headers["x-turnout-model"]) == (
            "from claude upstream",
            "stop",
            "claude-m",
        )
        text, calls, finish, _ = _openai_answer(gateway, stream, tools=TOOLS)
        assert finish == "tool_calls"
        assert calls[0][0] == "get_weather" and "city" in json.loads(calls[0][1])
        fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}}
        text, _, _, _ = _openai_answer(gateway, stream, response_format=fmt)
        assert set(json.loads(text)) == {"city", "temp"}


def _anthropic(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_client_to_openai_upstream(gateway_factory, stream) -> None:
    with shared_sim(BEHAVIOURS) as sim:
        gateway = gateway_factory(_config(sim, ["openai-m"]), env=ENV)
        client = _anthropic(gateway)
        messages = [{"role": "user", "content": "What's the weather in Paris?"}]
        tools = [
            {
                "name": "get_weather",
                "description": "Weather for a city",
                "input_schema": TOOLS[0]["function"]["parameters"],
            }
        ]
        if stream:
            with client.messages.stream(model="chat", max_tokens=200, messages=messages) as s:
                text = "".join(s.text_stream)
                final = s.get_final_message()
            assert text == "from openai upstream"
            assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
            with client.messages.stream(
                model="chat", max_tokens=200, messages=messages, tools=tools
            ) as s:
                final = s.get_final_message()
        else:
            raw = client.messages.with_raw_response.create(
                model="chat", max_tokens=200, messages=messages
            )
            message = raw.parse()
            assert message.content[0].text == "from openai upstream"
            assert raw.headers["x-turnout-model"] == "openai-m"
            final = client.messages.create(
                model="chat", max_tokens=200, messages=messages, tools=tools
            )
        assert final.stop_reason == "tool_use"
        tool = next(block for block in final.content if block.type == "tool_use")
        assert tool.name == "get_weather" and "city" in tool.input


def test_anthropic_client_errors_in_anthropic_shape(gateway_factory) -> None:
    with shared_sim(BEHAVIOURS) as sim:
        gateway = gateway_factory(_config(sim, ["openai-m"]), env=ENV)
        client = _anthropic(gateway)
        # the SDK will not send a request without max_tokens: send it raw, as a client might
        missing = http(
            "POST",
            gateway.url + "/v1/messages",
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}]}',
        )
        assert missing.status == 400
        assert missing.json()["type"] == "error"
        assert missing.json()["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in missing.json()["error"]["message"]
        broken = http("POST", gateway.url + "/v1/messages", b"{not json")
        assert broken.status == 400 and broken.json()["type"] == "error"
        with pytest.raises(anthropic.NotFoundError):
            client.messages.create(
                model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_primary_dies_before_first_token_anthropic_fallback_answers(
    gateway_factory, stream
) -> None:
    dying = {"disconnect_rate": 1.0, "disconnect_after": 0}
    with shared_sim({**BEHAVIOURS, "openai-m": dying}) as sim:
        gateway = gateway_factory(_config(sim, ["openai-m", "claude-m"]), env=ENV)
        text, _, finish, headers = _openai_answer(gateway, stream)
        assert (text, finish) == ("from claude upstream", "stop")
        assert headers["x-turnout-model"] == "claude-m"
        assert headers["x-turnout-fallback"] in ("openai-m=stream_broken", "openai-m=connection")


def test_overloaded_error_event_before_text_fails_over(gateway_factory) -> None:
    behaviours = {"claude-m": {"stream_error_after": 0}, "openai-m": {"reply": "rescued"}}
    with shared_sim(behaviours) as sim:
        gateway = gateway_factory(_config(sim, ["claude-m", "openai-m"]), env=ENV)
        text, _, _, headers = _openai_answer(gateway, stream=True)
        assert text == "rescued"
        assert headers["x-turnout-fallback"] == "claude-m=overloaded"


def test_overloaded_error_event_after_text_is_an_explicit_error(gateway_factory) -> None:
    behaviours = {
        "claude-m": {"stream_error_after": 2, "reply": "one two three four five"},
        "openai-m": {"reply": "too late to switch"},
    }
    with shared_sim(behaviours) as sim:
        gateway = gateway_factory(_config(sim, ["claude-m", "openai-m"]), env=ENV)
        stream = sdk_client(gateway).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        received = ""
        with pytest.raises(openai.APIError) as failed:
            for chunk in stream:
                received += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        assert received.startswith("one two")
        assert "overloaded" in str(failed.value.message) or "stream failed" in str(failed.value)
        # and an Anthropic client gets Anthropic's error event
        with (
            pytest.raises(anthropic.APIStatusError),
            _anthropic(gateway).messages.stream(
                model="chat", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            ) as s,
        ):
            for _ in s.text_stream:
                pass


def _gemini_gateway(gateway_factory, port: int, model: str):
    """A gateway whose one model is Gemini `model`, served by the replay on `port`."""
    config = {
        "providers": {
            "google": {
                "kind": "gemini",
                "base_url": f"http://127.0.0.1:{port}/v1beta",
                "api_key": "${GEMINI_TEST_KEY}",
            }
        },
        "models": {"gemini": {"provider": "google", "model": model, "supports": CAPABLE}},
        "routes": {"chat": {"targets": ["gemini"]}},
    }
    return gateway_factory(config, env={"GEMINI_TEST_KEY": "g-test-key-0123456789"})


def _google(name: str) -> list[dict]:
    return yaml.safe_load(vectors.cassette("google", name).read_text())["interactions"]


@pytest.mark.parametrize(
    ("cassette", "stream"),
    [("test_google_model.yaml", False), ("test_google_model_stream.yaml", True)],
)
def test_openai_client_to_gemini_upstream(gateway_factory, cassette, stream) -> None:
    upstream = CassetteUpstream(_google(cassette))
    with serve_app(upstream.app()) as port:
        gateway = _gemini_gateway(gateway_factory, port, "gemini-2.5-flash")
        text, _, finish, _ = _openai_answer(gateway, stream)
    recorded = upstream.interactions[0]["response"]
    if stream:
        expected = "".join(
            part.get("text", "")
            for line in recorded["body"]["string"].splitlines()
            if line.startswith("data: ")
            for part in json.loads(line[6:])["candidates"][0]["content"].get("parts", [])
            if not part.get("thought")
        )
    else:
        expected = recorded["parsed_body"]["candidates"][0]["content"]["parts"][0]["text"]
    assert text == expected and finish == "stop"
    sent = upstream.bodies[0]
    assert sent["contents"][-1] == {
        "role": "user",
        "parts": [{"text": "What's the weather in Paris?"}],
    }


def test_openai_client_to_gemini_tool_call(gateway_factory) -> None:
    upstream = CassetteUpstream(_google("test_google_model_structured_output.yaml"))
    with serve_app(upstream.app()) as port:
        gateway = _gemini_gateway(gateway_factory, port, "gemini-2.0-flash")
        _, calls, finish, _ = _openai_answer(gateway, False, tools=TOOLS)
    assert finish == "tool_calls"
    assert calls[0][0] == "temperature"
    assert json.loads(calls[0][1]) == {"city": "London", "date": "2022-01-01"}
    assert upstream.bodies[0]["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_openai_client_to_workers_ai(gateway_factory, stream) -> None:
    fake = FakeWorkersAI()
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/client/v4/accounts/acc123/ai/run/{model:.+}", fake.run)
    with serve_app(app) as port:
        config = {
            "providers": {
                "cf": {
                    "kind": "cloudflare",
                    "account_id": "acc123",
                    "api_key": "${CF_TEST_TOKEN}",
                    "base_url": f"http://127.0.0.1:{port}/client/v4/accounts/acc123/ai/run",
                }
            },
            "models": {"llama": {"provider": "cf", "model": CF_MODEL, "supports": CAPABLE}},
            "routes": {"chat": {"targets": ["llama"]}},
        }
        gateway = gateway_factory(config, env={"CF_TEST_TOKEN": "cf-secret-token-0123"})
        text, _, finish, headers = _openai_answer(gateway, stream)
        assert text and finish in ("stop", "length")
        assert headers["x-turnout-model"] == "llama"
        # JSON mode cannot stream on Workers AI: turnout fetches it whole and re-streams it
        text, _, _, _ = _openai_answer(gateway, stream, response_format={"type": "json_object"})
        assert isinstance(json.loads(text), dict)
    assert all(not body.get("stream") for body in fake.bodies if body.get("response_format"))
