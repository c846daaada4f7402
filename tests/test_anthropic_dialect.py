"""The Anthropic dialect beyond the recordings: the ingress decoder's validation and the
internal shape it produces, the upstream encoder on requests an OpenAI client would send,
the JSON-output techniques, the answer and error encoders, the stream encoder's exact event
sequence (read back by the official `anthropic` SDK), and the simulator's `/v1/messages`
driven by that SDK and by turnout's own HTTP provider."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from aiohttp import web

from turnout.config.schema import ProviderConfig, Timeouts
from turnout.dialects.anthropic import INGRESS, AnthropicRequest, AnthropicUpstream
from turnout.dialects.anthropic.upstream import JSON_INSTRUCTION, JSON_TOOL
from turnout.dialects.errors import InvalidRequest
from turnout.dialects.sse import SSEParser
from turnout.model import (
    Delta,
    ErrorClass,
    Request,
    Response,
    ToolCall,
    ToolCallDelta,
    UpstreamError,
    Usage,
)
from turnout.providers.base import Call
from turnout.providers.http import HTTPProvider
from turnout.sim import make_sim_app
from turnout.sim.schema import SimBehaviour

UPSTREAM = AnthropicUpstream()
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}
PNG = "iVBORw0KGgo="


def decode(body: dict[str, Any]) -> AnthropicRequest:
    return INGRESS.decode_request(orjson.dumps(body))


def ask(**fields: Any) -> dict[str, Any]:
    return {
        "model": "claude",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
        **fields,
    }


def events(raw: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    parser = SSEParser()
    return [(e.event, orjson.loads(e.data)) for e in parser.feed(raw) + parser.flush()]


# --- ingress: decoding a client's request --------------------------------------------------------


def test_decode_into_the_internal_shape() -> None:
    request = decode(
        {
            "model": "claude-x",
            "max_tokens": 300,
            "system": [
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather in Paris and Lisbon?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x/a.jpg"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "two calls", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "t1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "t2",
                            "name": "get_weather",
                            "input": {"city": "Lisbon"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "18C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t2",
                            "content": [{"type": "text", "text": "22C"}],
                            "is_error": False,
                        },
                        {"type": "text", "text": "Which is warmer?"},
                    ],
                },
            ],
            "tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search"}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 5,
            "metadata": {"user_id": "u-1"},
            "stream": True,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
        }
    )
    assert (request.model, request.max_tokens, request.stream) == ("claude-x", 300, True)
    assert (request.temperature, request.top_p, request.stop, request.user) == (
        0.5,
        0.9,
        ["END"],
        "u-1",
    )
    assert request.messages == [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris and Lisbon?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://x/a.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "t2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Lisbon"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "18C"},
        {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "22C"}]},
        {"role": "user", "content": [{"type": "text", "text": "Which is warmer?"}]},
    ]
    # only the custom tool is a function tool; the server tool waits in native
    assert request.tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    assert request.tool_choice == "auto"
    assert request.extra == {"parallel_tool_calls": False}
    assert request.native is not None
    assert request.native.fields == {
        "top_k": 5,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }


def test_an_anthropic_upstream_gets_the_client_body_as_written() -> None:
    body = ask(
        system=[{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
        tools=[WEATHER, {"type": "web_search_20250305", "name": "web_search"}],
        tool_choice={"type": "any"},
        thinking={"type": "enabled", "budget_tokens": 1024},
        output_config={"effort": "low"},
    )
    sent = UPSTREAM.encode_request(decode(body), "claude-up", stream=False)
    assert sent == {**body, "model": "claude-up"}
    # the same request as an OpenAI client would send it: Anthropic's own fields are gone
    request = decode(body)
    plain = Request(request.model, request.messages, tools=request.tools, tool_choice="required")
    translated = UPSTREAM.encode_request(plain, "claude-up", stream=False)
    assert translated["system"] == [{"type": "text", "text": "S"}]
    assert [tool["name"] for tool in translated["tools"]] == ["get_weather"]
    assert "thinking" not in translated and "output_config" not in translated


def test_a_changed_request_is_translated_not_echoed() -> None:
    request = decode(
        ask(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}
                    ],
                }
            ]
        )
    )
    request.messages = [*request.messages, {"role": "assistant", "content": "b"}]
    sent = UPSTREAM.encode_request(request, "m", stream=False)
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "b"}]},
    ]


def test_thinking_blocks_turnout_made_are_not_sent_back() -> None:
    body = ask(
        messages=[
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "mine", "signature": ""},
                    {"type": "thinking", "thinking": "theirs", "signature": "abc"},
                    {"type": "text", "text": "a"},
                ],
            },
            {"role": "user", "content": "q2"},
        ]
    )
    sent = UPSTREAM.encode_request(decode(body), "m", stream=False)
    assert [b["thinking"] for b in sent["messages"][1]["content"] if b["type"] == "thinking"] == [
        "theirs"
    ]


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        (
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            "max_tokens: Field required",
            "max_tokens",
        ),
        (ask(max_tokens=0), "max_tokens: Input should be greater than or equal to 1", "max_tokens"),
        (ask(max_tokens="9"), "max_tokens: Input should be a valid integer", "max_tokens"),
        ({"max_tokens": 5, "messages": []}, "model: Field required", "model"),
        ({"model": "m", "max_tokens": 5}, "messages: Field required", "messages"),
        (ask(messages=[]), "messages: at least one message is required", "messages"),
        (
            ask(messages=[{"role": "tool", "content": "x"}]),
            "messages.0.role: Input should be 'user' or 'assistant'",
            "messages.0.role",
        ),
        (
            ask(messages=[{"role": "user"}]),
            "messages.0.content: Field required",
            "messages.0.content",
        ),
        (
            ask(messages=[{"role": "user", "content": [{"type": "text"}]}]),
            "messages.0.content.0.text: Field required",
            "messages.0.content.0.text",
        ),
        (
            ask(
                messages=[
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "name": "f", "input": {}}],
                    }
                ]
            ),
            "messages.0.content.0.id: Field required",
            "messages.0.content.0.id",
        ),
        (
            ask(temperature=1.5),
            "temperature: Input should be less than or equal to 1",
            "temperature",
        ),
        (ask(top_p="x"), "top_p: Input should be a valid number", "top_p"),
        (
            ask(stop_sequences="END"),
            "stop_sequences: Input should be a valid list of strings",
            "stop_sequences",
        ),
        (
            ask(tools=[{"name": "f"}]),
            "tools.0.input_schema: Field required",
            "tools.0.input_schema",
        ),
        (ask(tool_choice={"type": "tool"}), "tool_choice.name: Field required", "tool_choice.name"),
        (
            ask(tool_choice={"type": "some"}),
            "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'",
            "tool_choice.type",
        ),
        (ask(system=7), "system: Input should be a valid string or a valid list", "system"),
        (
            ask(metadata={"user_id": 3}),
            "metadata.user_id: Input should be a valid string",
            "metadata.user_id",
        ),
        (ask(stream="yes"), "stream: Input should be a valid boolean", "stream"),
    ],
)
def test_malformed_requests_are_refused_as_anthropic_would(
    body: dict[str, Any], message: str, param: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode(body)
    assert (refused.value.message, refused.value.param, refused.value.status) == (
        message,
        param,
        400,
    )


def test_bodies_that_are_not_objects() -> None:
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        INGRESS.decode_request(b"{")
    with pytest.raises(InvalidRequest, match="JSON object"):
        INGRESS.decode_request(b"[]")


# --- upstream: what an OpenAI client's request becomes ------------------------------------------


def openai_request(**fields: Any) -> Request:
    return Request(
        model="chat", messages=fields.pop("messages", [{"role": "user", "content": "hi"}]), **fields
    )


def test_openai_conversation_to_anthropic() -> None:
    request = openai_request(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use metric units."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}},
                    {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}},
                ],
            },
            {"role": "user", "content": "Paris and Lisbon."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "functions.get_weather:0",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "not json"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "18C"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "22C"}],
            },
            {"role": "user", "content": "Which is warmer?"},
            {"role": "system", "content": "Answer in one word."},
        ],
        max_tokens=None,
        temperature=1.6,
        top_p=0.5,
        stop=["END"],
        user="u-9",
    )
    sent = AnthropicUpstream(max_tokens=1000).encode_request(request, "claude-up", stream=True)
    assert sent == {
        "model": "claude-up",
        "max_tokens": 1000,  # the configured default: Anthropic requires one
        "system": "Be brief.\n\nUse metric units.\n\nAnswer in one word.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}},
                    {"type": "text", "text": "Paris and Lisbon."},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "functions_get_weather_0",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "functions_get_weather_0",
                        "content": "18C",
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_2",
                        "content": [{"type": "text", "text": "22C"}],
                    },
                    {"type": "text", "text": "Which is warmer?"},
                ],
            },
        ],
        "temperature": 1.0,  # OpenAI's 0..2 capped to Anthropic's 0..1
        "top_p": 0.5,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-9"},
        "stream": True,
    }


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", True, {"type": "auto"}),
        ("required", True, {"type": "any"}),
        ("none", True, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            True,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, True, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(choice: Any, parallel: bool, expected: Any) -> None:
    function = {"name": "get_weather", "parameters": WEATHER["input_schema"]}
    request = openai_request(
        tools=[{"type": "function", "function": function}],
        tool_choice=choice,
        extra={} if parallel else {"parallel_tool_calls": False},
    )
    sent = UPSTREAM.encode_request(request, "m", stream=False)
    assert sent.get("tool_choice") == expected
    assert sent["tools"] == [{"name": "get_weather", "input_schema": WEATHER["input_schema"]}]


def test_tools_without_parameters_get_an_empty_schema() -> None:
    request = openai_request(
        tools=[{"type": "function", "function": {"name": "now", "strict": True}}]
    )
    tools = UPSTREAM.encode_request(request, "m", stream=False)["tools"]
    assert tools == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}, "strict": True}
    ]


def test_url_and_headers() -> None:
    assert (
        UPSTREAM.url("https://api.anthropic.com", "m", False)
        == "https://api.anthropic.com/v1/messages"
    )
    assert UPSTREAM.url("http://h:1/v1", "m", True) == "http://h:1/v1/messages"
    assert UPSTREAM.auth_headers("sk-ant") == {
        "x-api-key": "sk-ant",
        "anthropic-version": "2023-06-01",
    }
    assert AnthropicUpstream(api_version="2024-01-01").auth_headers(None) == {
        "anthropic-version": "2024-01-01"
    }
    assert UPSTREAM.default_base_url == "https://api.anthropic.com"


# --- JSON output ----------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}}


def test_json_schema_as_structured_output() -> None:
    sent = UPSTREAM.encode_request(openai_request(response_format=JSON_SCHEMA), "m", stream=False)
    assert sent["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert "tools" not in sent
    # an Anthropic client's own output_config keeps its other settings beside the format
    request = decode(
        ask(output_config={"effort": "low", "format": {"type": "json_schema", "schema": SCHEMA}})
    )
    assert request.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA},
    }
    sent = UPSTREAM.encode_request(request, "m", stream=False)
    assert sent["output_config"] == {
        "effort": "low",
        "format": {"type": "json_schema", "schema": SCHEMA},
    }


def test_json_schema_as_a_forced_tool() -> None:
    dialect = AnthropicUpstream(structured_output=False)
    sent = dialect.encode_request(openai_request(response_format=JSON_SCHEMA), "m", stream=False)
    assert "output_config" not in sent
    assert sent["tools"] == [
        {"name": JSON_TOOL, "description": sent["tools"][0]["description"], "input_schema": SCHEMA}
    ]
    assert sent["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    # with the client's own tools, any tool may come first; thinking refuses forced tools
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}
    sent = dialect.encode_request(
        openai_request(response_format=JSON_SCHEMA, tools=[weather]), "m", stream=False
    )
    assert [t["name"] for t in sent["tools"]] == ["get_weather", JSON_TOOL]
    assert sent["tool_choice"] == {"type": "any"}
    thinking = decode(
        ask(
            thinking={"type": "enabled", "budget_tokens": 2000},
            output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
        )
    )
    assert dialect.encode_request(thinking, "m", stream=False)["tool_choice"] == {"type": "auto"}

    # the forced call comes back as the answer's text, whole or streamed
    answer = {
        "id": "msg_1",
        "model": "m",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": JSON_TOOL, "input": {"city": "Lisbon"}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    response = dialect.decode_response(orjson.dumps(answer))
    assert (response.content, response.tool_calls, response.finish_reason) == (
        '{"city":"Lisbon"}',
        [],
        "stop",
    )
    # structured_output=True does not expect the trick: the call stays a call
    assert UPSTREAM.decode_response(orjson.dumps(answer)).tool_calls[0].name == JSON_TOOL
    stream = b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        for name, data in [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {"usage": {"input_tokens": 10, "output_tokens": 1}},
                },
            ),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": JSON_TOOL,
                        "input": {},
                    },
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": '"Lisbon"}'},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "tool_use"},
                    "usage": {"output_tokens": 5},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
    )
    decoder = dialect.stream_decoder()
    parser = SSEParser()
    deltas = [d for e in parser.feed(stream) for d in decoder.event(e)]
    assert "".join(d.content or "" for d in deltas) == '{"city": "Lisbon"}'
    assert not any(d.tool_calls for d in deltas)
    assert deltas[-1].finish_reason == "stop" and deltas[-1].usage == Usage(10, 5)


def test_json_object_is_a_system_instruction() -> None:
    mode = {"type": "json_object"}
    sent = UPSTREAM.encode_request(openai_request(response_format=mode), "m", stream=False)
    assert sent["system"] == JSON_INSTRUCTION
    request = openai_request(
        response_format=mode,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    )
    assert (
        UPSTREAM.encode_request(request, "m", stream=False)["system"]
        == f"Be brief.\n\n{JSON_INSTRUCTION}"
    )
    blocks = decode(ask(system=[{"type": "text", "text": "S"}]))
    blocks.response_format = mode
    assert UPSTREAM.encode_request(blocks, "m", stream=False)["system"] == [
        {"type": "text", "text": "S"},
        {"type": "text", "text": JSON_INSTRUCTION},
    ]


# --- ingress: answers and errors ------------------------------------------------------------------

RESPONSE = Response(
    id="chatcmpl-1",
    model="upstream",
    content="Lisbon is warmer.",
    tool_calls=[ToolCall("call_1", "get_weather", '{"city":"Lisbon"}')],
    finish_reason="tool_calls",
    usage=Usage(prompt_tokens=120, completion_tokens=30, cached_tokens=100),
    reasoning="compare",
)


def test_encode_response() -> None:
    body = orjson.loads(INGRESS.encode_response(RESPONSE, "route-a"))
    assert body == {
        "id": "msg_chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "route-a",
        "content": [
            {"type": "thinking", "thinking": "compare", "signature": ""},
            {"type": "text", "text": "Lisbon is warmer."},
            {
                "type": "tool_use",
                "id": "call_1",
                "name": "get_weather",
                "input": {"city": "Lisbon"},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "cache_read_input_tokens": 100, "output_tokens": 30},
    }
    message = anthropic.types.Message.model_validate(body)  # the SDK's own model takes it
    assert message.usage.cache_read_input_tokens == 100
    # and the upstream decoder reads it back to the same answer (ids and thinking aside)
    back = UPSTREAM.decode_response(orjson.dumps(body))
    assert (back.content, back.tool_calls, back.finish_reason, back.usage) == (
        RESPONSE.content,
        RESPONSE.tool_calls,
        RESPONSE.finish_reason,
        RESPONSE.usage,
    )


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_stop_reasons(finish: str, stop_reason: str) -> None:
    response = Response(id="msg_x", model="m", content="a", finish_reason=finish)
    assert orjson.loads(INGRESS.encode_response(response, "m"))["stop_reason"] == stop_reason
    assert orjson.loads(INGRESS.encode_response(response, "m"))["id"] == "msg_x"


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (400, None, "invalid_request_error"),
        (401, None, "authentication_error"),
        (403, None, "permission_error"),
        (404, None, "not_found_error"),
        (413, None, "request_too_large"),
        (429, "requests", "rate_limit_error"),  # OpenAI's type gives way to Anthropic's
        (500, None, "api_error"),
        (502, "upstream_error", "api_error"),
        (503, "service_unavailable", "overloaded_error"),
        (529, None, "overloaded_error"),
        (400, "not_found_error", "not_found_error"),  # an Anthropic upstream's own type stays
    ],
)
def test_encode_error(status: int, error_type: str | None, expected: str) -> None:
    body = orjson.loads(INGRESS.encode_error(status, "nope", error_type=error_type, code="c"))
    assert body == {"type": "error", "error": {"type": expected, "message": "nope"}}


# --- the stream encoder -----------------------------------------------------------------------------

DELTAS = [
    Delta(role="assistant"),
    Delta(reasoning="Compare "),
    Delta(reasoning="both."),
    Delta(content="Checking "),
    Delta(content="both."),
    Delta(tool_calls=[ToolCallDelta(0, "call_a", "get_weather", "")]),
    Delta(tool_calls=[ToolCallDelta(0, arguments='{"city":')]),
    Delta(tool_calls=[ToolCallDelta(0, arguments='"Paris"}')]),
    Delta(tool_calls=[ToolCallDelta(1, "call_b", "get_weather", '{"city":"Lisbon"}')]),
    Delta(finish_reason="tool_calls"),
    Delta(usage=Usage(prompt_tokens=50, completion_tokens=20, cached_tokens=10)),
]


def encoded_stream(deltas: list[Delta] = DELTAS) -> bytes:
    encoder = INGRESS.stream_encoder(Request(model="m", messages=[]), "route-a")
    return encoder.start() + b"".join(encoder.delta(d) for d in deltas) + encoder.finish(None)


def test_stream_encoder_event_sequence() -> None:
    got = events(encoded_stream())
    assert [name for name, _ in got] == [
        "message_start",
        "content_block_start",  # 0 thinking
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 1 text
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 2 tool_use call_a
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 3 tool_use call_b
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in got)
    start = got[0][1]["message"]
    assert start["id"].startswith("msg_") and start["model"] == "route-a"
    assert start["content"] == [] and start["role"] == "assistant"
    assert got[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    }
    assert got[6][1] == {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "text_delta", "text": "Checking "},
    }
    assert got[9][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_a",
        "name": "get_weather",
        "input": {},
    }
    assert got[14][1] == {
        "type": "content_block_delta",
        "index": 3,
        "delta": {"type": "input_json_delta", "partial_json": '{"city":"Lisbon"}'},
    }
    assert got[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 40, "cache_read_input_tokens": 10, "output_tokens": 20},
    }
    assert got[-1][1] == {"type": "message_stop"}


def test_stream_encoder_plain_text_and_empty_answers() -> None:
    got = events(encoded_stream([Delta(content="Hi"), Delta(finish_reason="length")]))
    assert [name for name, _ in got] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert got[4][1]["delta"]["stop_reason"] == "max_tokens"
    assert got[4][1]["usage"] == {"output_tokens": 0}  # no usage ever arrived
    empty = events(encoded_stream([]))
    assert [name for name, _ in empty] == ["message_start", "message_delta", "message_stop"]
    assert empty[1][1]["delta"]["stop_reason"] == "end_turn"


def test_stream_round_trip_through_the_upstream_decoder() -> None:
    parser, decoder = SSEParser(), UPSTREAM.stream_decoder()
    deltas = [d for e in parser.feed(encoded_stream()) for d in decoder.event(e)]
    assert decoder.done and decoder.finished
    assert "".join(d.reasoning or "" for d in deltas) == "Compare both."
    assert "".join(d.content or "" for d in deltas) == "Checking both."
    calls: dict[int, list[str]] = {}
    for delta in deltas:
        for call in delta.tool_calls or ():
            slot = calls.setdefault(call.index, ["", "", ""])
            slot[0], slot[1] = slot[0] or call.id or "", slot[1] or call.name or ""
            slot[2] += call.arguments
    assert calls == {
        0: ["call_a", "get_weather", '{"city":"Paris"}'],
        1: ["call_b", "get_weather", '{"city":"Lisbon"}'],
    }
    assert deltas[-1].finish_reason == "tool_calls"
    assert deltas[-1].usage == Usage(prompt_tokens=50, completion_tokens=20, cached_tokens=10)


def test_stream_error_event() -> None:
    encoder = INGRESS.stream_encoder(Request(model="m", messages=[]), "m")
    raw = (
        encoder.start()
        + encoder.delta(Delta(content="partial"))
        + encoder.error(502, "broke", "stream_broken")
    )
    name, data = events(raw)[-1]
    assert name == "error"
    assert data == {"type": "error", "error": {"type": "api_error", "message": "broke"}}
    with pytest.raises(UpstreamError) as caught:
        decoder, parser = UPSTREAM.stream_decoder(), SSEParser()
        for event in parser.feed(raw):
            decoder.event(event)
    assert caught.value.error_class is ErrorClass.SERVER_ERROR


# --- the official SDK reading what we write ---------------------------------------------------------


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """`await serve(app)` -> its root URL on a real port; everything stops after the test."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def replaying(raw: bytes) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for i in range(0, len(raw), 37):  # odd slices, as a network would
            await response.write(raw[i : i + 37])
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", handler)
    return app


def sdk(root: str, timeout: float = 10.0) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=root, api_key="x", max_retries=0, timeout=timeout)


async def test_sdk_reads_the_stream_encoder(serve: Any) -> None:
    client = sdk(await serve(replaying(encoded_stream())))
    async with client.messages.stream(
        model="m", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = [piece async for piece in stream.text_stream]
        message = await stream.get_final_message()
    await client.close()
    assert "".join(text) == "Checking both."
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.content[0].thinking == "Compare both."
    assert [(b.id, b.input) for b in message.content[2:]] == [
        ("call_a", {"city": "Paris"}),
        ("call_b", {"city": "Lisbon"}),
    ]
    assert message.stop_reason == "tool_use"
    assert (
        message.usage.input_tokens,
        message.usage.cache_read_input_tokens,
        message.usage.output_tokens,
    ) == (40, 10, 20)


async def test_sdk_raises_on_the_error_event(serve: Any) -> None:
    encoder = INGRESS.stream_encoder(Request(model="m", messages=[]), "m")
    raw = (
        encoder.start() + encoder.delta(Delta(content="partial")) + encoder.error(502, "broke", "x")
    )
    client = sdk(await serve(replaying(raw)))
    seen = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with client.messages.stream(
            model="m", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            async for text in stream.text_stream:
                seen.append(text)
    await client.close()
    assert seen == ["partial"]
    assert caught.value.body["error"] == {"type": "api_error", "message": "broke"}


# --- the simulator's /v1/messages ----------------------------------------------------------------

FAST = {"tokens_per_second": 10_000}
HI = [{"role": "user", "content": "What is the weather like in Lisbon today?"}]


async def start_sim(serve: Any, models: dict[str, dict[str, Any]], seed: int = 0) -> str:
    behaviours = {name: SimBehaviour.model_validate(spec) for name, spec in models.items()}
    return await serve(make_sim_app(behaviours, seed))


async def test_sim_answer(serve: Any) -> None:
    root = await start_sim(
        serve, {"claude-sim": {"reply": "The sky is clear.", "ratelimit_remaining": 7}}
    )
    client = sdk(root)
    raw = await client.messages.with_raw_response.create(
        model="claude-sim", max_tokens=64, messages=HI
    )
    message = await raw.parse()
    assert message.id.startswith("msg_sim") and message.model == "claude-sim"
    assert [(b.type, b.text) for b in message.content] == [("text", "The sky is clear.")]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 4
    # the gateway's own estimate (model/tokens.py): ~4 characters a token, +4 a message
    assert message.usage.input_tokens == len(HI[0]["content"]) // 4 + 4
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "7"
    assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    await client.close()


async def test_sim_stream_tools_and_json(serve: Any) -> None:
    root = await start_sim(serve, {"claude-sim": {"reply": "one two three", **FAST}})
    client = sdk(root)
    async with client.messages.stream(model="claude-sim", max_tokens=64, messages=HI) as stream:
        text = "".join([t async for t in stream.text_stream])
        message = await stream.get_final_message()
    assert text == "one two three" and message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 3

    for streamed in (False, True):
        if streamed:
            async with client.messages.stream(
                model="claude-sim", max_tokens=64, messages=HI, tools=[WEATHER]
            ) as stream:
                message = await stream.get_final_message()
        else:
            message = await client.messages.create(
                model="claude-sim", max_tokens=64, messages=HI, tools=[WEATHER]
            )
        (call,) = message.content
        assert call.type == "tool_use" and call.id.startswith("toolu_sim")
        assert (call.name, call.input) == ("get_weather", {"city": "sim", "days": 1})
        assert message.stop_reason == "tool_use"

    message = await client.messages.create(
        model="claude-sim",
        max_tokens=64,
        messages=HI,
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
    )
    assert json.loads(message.content[0].text) == {"city": "sim"}
    short = await client.messages.create(model="claude-sim", max_tokens=2, messages=HI)
    assert (short.content[0].text, short.stop_reason) == ("one two", "max_tokens")
    await client.close()


async def test_sim_refuses_like_anthropic(serve: Any) -> None:
    root = await start_sim(serve, {"claude-sim": {}})
    client = sdk(root)
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="nope", max_tokens=8, messages=HI)
    assert missing.value.body["error"] == {"type": "not_found_error", "message": "model: nope"}
    await client.close()
    async with aiohttp.ClientSession() as session:
        async with session.post(
            root + "/v1/messages", json={"model": "claude-sim", "messages": HI}
        ) as response:
            assert response.status == 400
            assert await response.json() == {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
            }
        async with session.post(root + "/v1/messages", data=b"{") as response:
            assert response.status == 400
            assert (await response.json())["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("status", "exception", "error_type"),
    [
        (529, anthropic.OverloadedError, "overloaded_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (402, anthropic.APIStatusError, "billing_error"),
    ],
)
async def test_sim_error_rates(serve: Any, status: int, exception: type, error_type: str) -> None:
    root = await start_sim(serve, {"claude-sim": {"error_rate": {status: 1.0}}})
    client = sdk(root)
    with pytest.raises(exception) as failed:
        await client.messages.create(model="claude-sim", max_tokens=8, messages=HI)
    await client.close()
    assert failed.value.status_code == status
    assert failed.value.body["type"] == "error"
    assert failed.value.body["error"]["type"] == error_type


async def test_sim_rate_limit_outage_hang_and_disconnect(serve: Any) -> None:
    root = await start_sim(
        serve,
        {
            "busy": {"rate_limit_rate": 1.0, "retry_after": 2},
            "down": {"outages": [{"start": 0, "end": "1h", "status": 529}]},
            "stuck": {"hang_rate": 1.0},
            "flaky": {"disconnect_rate": 1.0, "disconnect_after": 3, **FAST},
        },
    )
    client = sdk(root)
    with pytest.raises(anthropic.RateLimitError) as limited:
        await client.messages.create(model="busy", max_tokens=8, messages=HI)
    headers = limited.value.response.headers
    assert headers["retry-after"] == "2"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.OverloadedError):
        await client.messages.create(model="down", max_tokens=8, messages=HI)
    impatient = sdk(root, timeout=0.3)
    with pytest.raises(anthropic.APITimeoutError):
        await impatient.messages.create(model="stuck", max_tokens=8, messages=HI)
    await impatient.close()
    received = []
    with pytest.raises(Exception) as broken:
        async with client.messages.stream(model="flaky", max_tokens=64, messages=HI) as stream:
            async for text in stream.text_stream:
                received.append(text)
    assert "".join(received) == "Hello from"  # message_start + two tokens, then the drop
    assert not isinstance(broken.value, anthropic.APIStatusError)
    await client.close()


@pytest.mark.parametrize(("after", "text"), [(0, ""), (2, "Hello from")])
async def test_sim_stream_error_before_and_after_text(serve: Any, after: int, text: str) -> None:
    root = await start_sim(serve, {"claude-sim": {"stream_error_after": after, **FAST}})
    client = sdk(root)
    received = []
    with pytest.raises(anthropic.APIStatusError) as failed:
        async with client.messages.stream(model="claude-sim", max_tokens=64, messages=HI) as stream:
            async for piece in stream.text_stream:
                received.append(piece)
    await client.close()
    assert "".join(received) == text
    assert failed.value.body["error"]["type"] == "overloaded_error"

    # the OpenAI endpoint does the same with an error chunk
    oai = openai.AsyncOpenAI(base_url=root + "/v1", api_key="x", max_retries=0)
    received = []
    with pytest.raises(openai.APIError):
        stream = await oai.chat.completions.create(model="claude-sim", messages=HI, stream=True)
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    await oai.close()
    assert "".join(received) == text


# --- turnout's own HTTP provider against the sim ---------------------------------------------------


async def test_http_provider_speaks_anthropic_to_the_sim(serve: Any) -> None:
    root = await start_sim(
        serve,
        {
            "claude-sim": {"reply": "via anthropic", **FAST},
            "claude-breaks": {"stream_error_after": 1, **FAST},
            "claude-busy": {"error_rate": {529: 1.0}},
        },
    )
    provider = HTTPProvider("anthropic", ProviderConfig(kind="anthropic", base_url=root), UPSTREAM)
    await provider.start()
    try:
        request = Request(model="chat", messages=[{"role": "system", "content": "Be brief."}, *HI])
        response = await provider.complete(request, Call("claude-sim", Timeouts()))
        assert (response.content, response.finish_reason) == ("via anthropic", "stop")
        assert response.usage.completion_tokens == 2
        deltas = [d async for d in provider.stream(request, Call("claude-sim", Timeouts()))]
        assert "".join(d.content or "" for d in deltas) == "via anthropic"
        assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 2

        received = []
        with pytest.raises(UpstreamError) as broken:
            async for delta in provider.stream(request, Call("claude-breaks", Timeouts())):
                received.append(delta.content or "")
        assert "".join(received) == "Hello"
        assert broken.value.error_class is ErrorClass.OVERLOADED

        with pytest.raises(UpstreamError) as busy:
            await provider.complete(request, Call("claude-busy", Timeouts()))
        assert (busy.value.error_class, busy.value.status) == (ErrorClass.OVERLOADED, 529)
        with pytest.raises(UpstreamError) as unknown:
            await provider.complete(request, Call("nope", Timeouts()))
        assert unknown.value.error_class is ErrorClass.AUTH
    finally:
        await provider.close()
    await asyncio.sleep(0)
