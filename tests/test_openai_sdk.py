"""The official openai SDK works unchanged against a running `turnout serve`: sync and async,
streaming and not."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import sim_config

REPLY = "The quick brown fox jumps over the lazy dog."
MESSAGES = [{"role": "user", "content": "Tell me about foxes."}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    from tests.conftest import start_gateway

    config = sim_config(
        {"primary": {"reply": REPLY, "tokens_per_second": 2000}},
        {"chat": {"targets": ["primary"]}},
    )
    gateway = start_gateway(config, tmp_path_factory.mktemp("sdk"))
    yield gateway
    gateway.stop()


def test_sync_non_streaming(gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    answer = raw.parse()
    assert answer.choices[0].message.content == REPLY
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.completion_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert raw.headers["x-turnout-route"] == "chat"
    assert raw.headers["x-turnout-model"] == "primary"
    assert raw.headers["x-turnout-attempts"] == "1"
    assert "x-turnout-fallback" not in raw.headers


def test_sync_streaming_with_usage(gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0


def test_streaming_without_include_usage_sends_no_usage_chunk(gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(model="chat", messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_async_non_streaming(gateway) -> None:
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key="unused", max_retries=0
    ) as client:
        answer = await client.chat.completions.create(model="chat", messages=MESSAGES)
    assert answer.choices[0].message.content == REPLY
    assert answer.model == "primary"


async def test_async_streaming(gateway) -> None:
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key="unused", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == REPLY


def test_tool_calls_round_trip(gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    answer = client.chat.completions.create(model="chat", messages=MESSAGES, tools=tools)
    call = answer.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "city" in call.function.arguments
    assert answer.choices[0].finish_reason == "tool_calls"
    stream = client.chat.completions.create(
        model="chat", messages=MESSAGES, tools=tools, stream=True
    )
    name, arguments = None, ""
    for chunk in stream:
        for delta_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name = name or delta_call.function.name
            arguments += delta_call.function.arguments or ""
    assert name == "get_weather"
    assert arguments == call.function.arguments


def test_models_and_health(gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    ids = {m.id for m in client.models.list()}
    assert ids == {"chat", "primary"}
    assert gateway.get("/health").json()["status"] == "ok"
    providers = gateway.get("/health/providers").json()
    assert providers["routes"]["chat"]["targets"][0]["model"] == "primary"
    assert providers["models"]["primary"]["requests"] >= 1
