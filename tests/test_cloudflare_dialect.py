"""The Cloudflare Workers AI dialect (native `/ai/run/{model}` API).

No Workers AI traffic was recorded, so the wire examples below are taken from Cloudflare's
documentation, each cited where it is used:
- REST answer:      https://developers.cloudflare.com/workers-ai/get-started/rest-api/
- model schemas:    https://developers.cloudflare.com/workers-ai/models/llama-3.1-8b-instruct/
                    (cloudflare/cloudflare-docs src/content/workers-ai-models/*.json)
- JSON mode:        https://developers.cloudflare.com/workers-ai/features/json-mode/
- function calling: https://developers.cloudflare.com/workers-ai/features/function-calling/traditional/
                    and cloudflare/ai-utils src/runWithTools.ts (how tool history is sent)
- streaming:        https://developers.cloudflare.com/workers-ai/features/streaming/
- errors:           https://developers.cloudflare.com/workers-ai/platform/errors/
The end-to-end tests run a real HTTPProvider against a tiny aiohttp app that speaks this format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from turnout.config.schema import Timeouts
from turnout.dialects.cloudflare import CloudflareStreamDecoder, CloudflareUpstream
from turnout.dialects.sse import SSEEvent, SSEParser
from turnout.model import Delta, ErrorClass, Request, UpstreamError, Usage
from turnout.providers.base import Call
from turnout.providers.cloudflare import CloudflareConfig
from turnout.providers.http import HTTPProvider

MODEL = "@cf/meta/llama-3.1-8b-instruct"
DIALECT = CloudflareUpstream("acc123")

# --- documented wire examples --------------------------------------------------------------------

# get-started/rest-api: the answer of `POST /accounts/{ACCOUNT_ID}/ai/run/@cf/...`
REST_ANSWER = {
    "result": {
        "response": "Hello, World first appeared in 1974 at Bell Labs when Brian Kernighan "
        "included it in the C programming language example."
    },
    "success": True,
    "errors": [],
    "messages": [],
}
# features/json-mode: the request, and the answer whose `response` is already an object
JSON_MODE_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "capital": {"type": "string"},
        "languages": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "capital", "languages"],
}
JSON_MODE_MESSAGES = [
    {"role": "system", "content": "Extract data about a country."},
    {"role": "user", "content": "Tell me about India."},
]
JSON_MODE_ANSWER = {
    "response": {"name": "India", "capital": "New Delhi", "languages": ["Hindi", "English"]}
}
# function-calling/traditional: the tool, and llama 3.x's answer (`{name, arguments}`)
WEATHER_TOOL = {
    "name": "getWeather",
    "description": "Return the weather for a latitude and longitude",
    "parameters": {
        "type": "object",
        "properties": {
            "latitude": {"type": "string", "description": "The latitude for the given location"},
            "longitude": {
                "type": "string",
                "description": "The longitude for the given location",
            },
        },
        "required": ["latitude", "longitude"],
    },
}
LEGACY_CALLS = [{"arguments": {"latitude": "51.5", "longitude": "-0.12"}, "name": "getWeather"}]
# the output schema of newer models (llama-4-scout-17b-16e-instruct): OpenAI-shaped calls
OPENAI_CALLS = [
    {
        "id": "chatcmpl-tool-1",
        "type": "function",
        "function": {"name": "getWeather", "arguments": {"latitude": "51.5", "longitude": "0"}},
    }
]
# output schema `usage` (llama-3.3-70b-instruct-fp8-fast)
USAGE = {"prompt_tokens": 755, "completion_tokens": 10, "total_tokens": 765}
# features/streaming: `data: {"response": ...}` events then `data: [DONE]`; `p` pads the event
# sizes, and the last event before [DONE] carries the usage
STREAM = (
    'data: {"response":"Hello","p":"abcdefghijklmnopqrstuvw"}\n\n'
    'data: {"response":"!","p":"abcdefgh"}\n\n'
    'data: {"response":" How can I help?","p":"abcdefghijklmnopqr"}\n\n'
    'data: {"response":""}\n\n'
    'data: {"response":"","usage":' + orjson.dumps(USAGE).decode() + "}\n\n"
    "data: [DONE]\n\n"
)


def envelope(result: dict[str, Any]) -> bytes:
    return orjson.dumps({"result": result, "success": True, "errors": [], "messages": []})


def failure(code: int, message: str) -> bytes:
    return orjson.dumps(
        {"result": None, "success": False, "errors": [{"code": code, "message": message}]}
    )


def request(messages: list[dict[str, Any]] | None = None, **fields: Any) -> Request:
    return Request(model="cf", messages=messages or [{"role": "user", "content": "Hi"}], **fields)


def read_stream(raw: bytes, size: int | None = None) -> tuple[list[Delta], CloudflareStreamDecoder]:
    parser, decoder = SSEParser(), DIALECT.stream_decoder()
    pieces = [raw] if size is None else [raw[i : i + size] for i in range(0, len(raw), size)]
    deltas = []
    for piece in pieces:
        for event in parser.feed(piece):
            deltas.extend(decoder.event(event))
    for event in parser.flush():
        deltas.extend(decoder.event(event))
    return deltas, decoder


# --- url, auth, encoding ---------------------------------------------------------------------------


def test_url_and_auth() -> None:
    assert DIALECT.default_base_url == (
        "https://api.cloudflare.com/client/v4/accounts/acc123/ai/run"
    )
    assert DIALECT.url(DIALECT.default_base_url, MODEL, True) == (
        "https://api.cloudflare.com/client/v4/accounts/acc123/ai/run/@cf/meta/llama-3.1-8b-instruct"
    )
    assert DIALECT.auth_headers("tok") == {"authorization": "Bearer tok"}
    assert DIALECT.auth_headers(None) == {}
    assert CloudflareUpstream().default_base_url is None  # then config.base_url is required


def test_encode_request() -> None:
    body = DIALECT.encode_request(
        request(
            [
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather in "},
                        {"type": "text", "text": "London?"},
                    ],
                },
            ],
            max_tokens=100,
            temperature=0.2,
            top_p=0.9,
            stop=["END"],  # Workers AI has no stop sequences: not sent
            extra={"seed": 7, "top_k": 5, "frequency_penalty": 0.5, "logit_bias": {}},
            tools=[
                {"type": "function", "function": WEATHER_TOOL},
                {"type": "function", "function": {"name": "now"}},
                {"type": "web_search"},
            ],
            tool_choice="auto",
        ),
        MODEL,
        False,
    )
    assert body == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in London?"},
        ],
        "max_tokens": 100,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "top_k": 5,
        "frequency_penalty": 0.5,
        "tools": [
            {"type": "function", "function": WEATHER_TOOL},
            # the model schema requires description and parameters
            {
                "type": "function",
                "function": {
                    "name": "now",
                    "description": "",
                    "parameters": {"type": "object", "properties": {}},
                },
            },
        ],
    }
    # tool_choice has no native field; "none" is kept by offering no tools
    tools = [{"type": "function", "function": WEATHER_TOOL}]
    assert "tools" not in DIALECT.encode_request(
        request(tools=tools, tool_choice="none"), MODEL, False
    )
    # Workers AI stops at 256 tokens unless told: a configured default is sent instead
    assert CloudflareUpstream("a", max_tokens=2048).encode_request(request(), MODEL, True) == {
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "max_tokens": 2048,
    }


def test_encode_tool_history() -> None:
    # the string-only messages schema: calls go as JSON content, as runWithTools sends them
    messages = [
        {"role": "user", "content": "Weather in London?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "getWeather", "arguments": '{"latitude":"51.5"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "12 degrees"},
    ]
    assert DIALECT.encode_request(request(messages), MODEL, False)["messages"] == [
        {"role": "user", "content": "Weather in London?"},
        {"role": "assistant", "content": '{"name":"getWeather","arguments":{"latitude":"51.5"}}'},
        {"role": "tool", "name": "getWeather", "content": "12 degrees"},
    ]


def test_images_are_refused_not_dropped() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with pytest.raises(UpstreamError) as caught:
        DIALECT.encode_request(request([{"role": "user", "content": [image]}]), MODEL, False)
    assert caught.value.error_class is ErrorClass.CLIENT_ERROR


def test_json_mode_encoding_never_streams() -> None:
    schema_format = {
        "type": "json_schema",
        "json_schema": {"name": "country", "schema": JSON_MODE_SCHEMA, "strict": True},
    }
    json_request = request(JSON_MODE_MESSAGES, response_format=schema_format, stream=True)
    assert DIALECT.streams(json_request) is False
    body = DIALECT.encode_request(json_request, MODEL, True)
    # the documented request: the schema itself under json_schema, not OpenAI's wrapper
    assert body == {
        "messages": JSON_MODE_MESSAGES,
        "stream": False,
        "response_format": {"type": "json_schema", "json_schema": JSON_MODE_SCHEMA},
    }
    object_request = request(response_format={"type": "json_object"})
    assert DIALECT.encode_request(object_request, MODEL, False)["response_format"] == {
        "type": "json_object"
    }
    assert DIALECT.streams(request(response_format={"type": "text"})) is True
    assert "response_format" not in DIALECT.encode_request(
        request(response_format={"type": "text"}), MODEL, True
    )


# --- answers ---------------------------------------------------------------------------------------


def test_decode_rest_answer() -> None:
    response = DIALECT.decode_response(orjson.dumps(REST_ANSWER))
    assert response.content == REST_ANSWER["result"]["response"]
    assert (response.finish_reason, response.tool_calls, response.usage) == ("stop", [], Usage())
    assert response.id.startswith("cf-") and response.created > 0


def test_decode_json_mode_object() -> None:
    response = DIALECT.decode_response(envelope({**JSON_MODE_ANSWER, "usage": USAGE}))
    assert response.content is not None
    assert orjson.loads(response.content) == JSON_MODE_ANSWER["response"]
    assert response.usage == Usage(prompt_tokens=755, completion_tokens=10)


@pytest.mark.parametrize("calls", [LEGACY_CALLS, OPENAI_CALLS], ids=["llama-3", "openai-shape"])
def test_decode_tool_calls(calls: list[dict[str, Any]]) -> None:
    response = DIALECT.decode_response(envelope({"response": None, "tool_calls": calls}))
    [call] = response.tool_calls
    function = calls[0].get("function", calls[0])
    assert (call.name, orjson.loads(call.arguments)) == ("getWeather", function["arguments"])
    assert call.id == calls[0].get("id", call.id) and call.id
    assert (response.finish_reason, response.content) == ("tool_calls", None)


def test_decode_chat_completions_result() -> None:
    # newer models may answer /ai/run in the Chat Completions shape
    result = {
        "choices": [
            {
                "message": {"content": "Hi!", "reasoning_content": "greet"},
                "finish_reason": "length",
            }
        ],
        "usage": USAGE,
    }
    result["usage"] = {**USAGE, "prompt_tokens_details": {"cached_tokens": 700}}
    response = DIALECT.decode_response(envelope(result))
    assert response.usage == Usage(prompt_tokens=755, completion_tokens=10, cached_tokens=700)
    assert (response.content, response.reasoning, response.finish_reason) == (
        "Hi!",
        "greet",
        "length",
    )


def test_unusable_answers() -> None:
    with pytest.raises(UpstreamError) as caught:
        DIALECT.decode_response(failure(3040, "Capacity temporarily exceeded, please try again."))
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    for raw in (b"nope", b"[]", b'{"result": "x", "success": true}'):
        with pytest.raises(UpstreamError) as caught:
            DIALECT.decode_response(raw)
        assert caught.value.error_class is ErrorClass.INVALID_OUTPUT


# --- streams ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [None, 1, 7, 64])
def test_stream(size: int | None) -> None:
    deltas, decoder = read_stream(STREAM.encode(), size)
    assert "".join(d.content or "" for d in deltas) == "Hello! How can I help?"
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    assert deltas[-1].finish_reason == "stop"  # said at [DONE]
    assert [d.usage for d in deltas if d.usage] == [Usage(prompt_tokens=755, completion_tokens=10)]
    assert [d.role for d in deltas if d.role] == ["assistant"]
    assert decoder.done and decoder.finished


def test_stream_cut_before_done_is_not_finished() -> None:
    _, decoder = read_stream(STREAM.split("data: [DONE]")[0].encode())
    assert not decoder.finished and not decoder.done  # HTTPProvider makes it STREAM_BROKEN


def test_stream_tool_calls() -> None:
    legacy = (
        'data: {"response":"","tool_calls":' + orjson.dumps(LEGACY_CALLS).decode() + "}\n\n"
        "data: [DONE]\n\n"
    )
    deltas, _ = read_stream(legacy.encode(), 5)
    [call] = [c for d in deltas for c in d.tool_calls or []]
    assert (call.index, call.name) == (0, "getWeather") and call.id
    assert orjson.loads(call.arguments) == LEGACY_CALLS[0]["arguments"]
    assert deltas[-1].finish_reason == "tool_calls"

    # newer models stream Chat Completions chunks, calls in pieces by index
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return (
            "data: "
            + orjson.dumps({"choices": [{"delta": delta, "finish_reason": finish}]}).decode()
            + "\n\n"
        )

    pieces = (
        chunk({"role": "assistant", "content": ""})
        + chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "t1", "type": "function", "function": {"name": "getWeather"}}
                ]
            }
        )
        + chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"latitude": '}}]})
        + chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"51.5"}'}}]})
        + chunk({}, "tool_calls")
        + 'data: {"response":"","usage":'
        + orjson.dumps(USAGE).decode()
        + "}\n\n"
        + "data: [DONE]\n\n"
    )
    deltas, decoder = read_stream(pieces.encode(), 9)
    calls = [c for d in deltas for c in d.tool_calls or []]
    assert [(c.index, c.id, c.name) for c in calls] == [
        (0, "t1", "getWeather"),
        (0, None, None),
        (0, None, None),
    ]
    assert "".join(c.arguments for c in calls) == '{"latitude": "51.5"}'
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["tool_calls"]
    assert deltas[-2].usage == Usage(prompt_tokens=755, completion_tokens=10)
    assert decoder.finished


def test_stream_error_event() -> None:
    event = SSEEvent('{"errors":[{"code":3040,"message":"Capacity temporarily exceeded"}]}')
    with pytest.raises(UpstreamError) as caught:
        list(DIALECT.stream_decoder().event(event))
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    with pytest.raises(UpstreamError) as caught:
        list(DIALECT.stream_decoder().event(SSEEvent("{cut")))
    assert caught.value.error_class is ErrorClass.STREAM_BROKEN


# --- errors (platform/errors: internal code, HTTP code, description) ------------------------------

DOCUMENTED_ERRORS = [
    (429, 3040, "Capacity temporarily exceeded, please try again.", ErrorClass.RATE_LIMITED),
    (
        429,
        3036,
        (
            "You have used up your daily free allocation of 10,000 neurons. Please upgrade to "
            "Cloudflare's Workers Paid plan if you would like to continue usage."
        ),
        ErrorClass.QUOTA,
    ),
    (400, 5007, "No such model @cf/meta/llama-9 or task", ErrorClass.AUTH),
    (404, 3042, "The model name is invalid", ErrorClass.AUTH),
    (403, 5016, "User has not agreed to Llama3.2 model terms", ErrorClass.AUTH),
    (403, 3023, "Service unavailable for account", ErrorClass.AUTH),
    (401, 10000, "Authentication error", ErrorClass.AUTH),
    (408, 3007, "Request timeout", ErrorClass.TIMEOUT),
    (408, 3008, "Request was aborted", ErrorClass.TIMEOUT),
    (413, 3006, "Request is too large", ErrorClass.CONTEXT_LENGTH),
    (
        413,
        5021,
        (
            "The estimated number of input and maximum output tokens (35000) exceeded this model "
            "context window limit (24000)."
        ),
        ErrorClass.CONTEXT_LENGTH,
    ),
    (
        400,
        5006,
        (
            "AiError: Bad input: Error: oneOf at '/' not met, 0 matches: required properties at "
            "'/' are 'prompt'"
        ),
        ErrorClass.CLIENT_ERROR,
    ),
    (400, 3003, "Request is missing headers or body: body", ErrorClass.CLIENT_ERROR),
    (500, 9999, "JSON Mode couldn't be met", ErrorClass.INVALID_OUTPUT),
    (500, 3999, "Internal error", ErrorClass.SERVER_ERROR),
    (503, 3998, "Service unavailable", ErrorClass.SERVER_ERROR),
]


@pytest.mark.parametrize(("status", "code", "message", "error_class"), DOCUMENTED_ERRORS)
def test_decode_documented_error(
    status: int, code: int, message: str, error_class: ErrorClass
) -> None:
    error = DIALECT.decode_error(status, failure(code, message), {})
    assert (error.error_class, error.status, error.code, error.message) == (
        error_class,
        status,
        str(code),
        message,
    )


def test_error_shapes_and_headers() -> None:
    # the OpenAI-compatible wording of the daily allocation, and bodies without a code
    quota = orjson.dumps(
        {
            "error": {
                "message": "4006: you have used up your daily free allocation of 10,000 neurons"
            }
        }
    )
    assert DIALECT.decode_error(429, quota, {}).error_class is ErrorClass.QUOTA
    assert DIALECT.decode_error(502, b"<html>bad gateway</html>", {}).error_class is (
        ErrorClass.SERVER_ERROR
    )
    error = DIALECT.decode_error(429, failure(3040, "busy"), {"Retry-After": "3"})
    assert error.retry_after == 3.0
    assert DIALECT.decode_error(500, b"", {}).message == "HTTP 500"


# --- end to end: a real HTTPProvider against a tiny Workers AI ---------------------------------------


class FakeWorkersAI:
    """Speaks Workers AI's native format on 127.0.0.1, and remembers what it was sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    async def run(self, http: web.Request) -> web.StreamResponse:
        body = await http.json()
        self.bodies.append(body)
        self.headers.append(dict(http.headers))
        if http.match_info["model"] != MODEL:
            return web.Response(status=400, body=failure(5007, "No such model or task"))
        if http.headers.get("authorization") != "Bearer cf-secret-token-0123":
            return web.Response(status=401, body=failure(10000, "Authentication error"))
        if body["messages"][-1]["content"] == "busy":
            return web.Response(
                status=429, body=failure(3040, "Capacity exceeded"), headers={"Retry-After": "2"}
            )
        if body.get("response_format"):
            if body.get("stream"):  # what Workers AI refuses
                return web.Response(status=400, body=failure(5006, "JSON mode cannot stream"))
            return web.Response(body=envelope({**JSON_MODE_ANSWER, "usage": USAGE}))
        if body.get("stream"):
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(http)
            for event in STREAM.split("\n\n")[:-1]:
                await response.write(event.encode() + b"\n\n")
            await response.write_eof()
            return response
        return web.Response(body=envelope({"response": "Hello!", "usage": USAGE}))


@pytest.fixture
async def workers_ai(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[HTTPProvider, FakeWorkersAI]]:
    fake = FakeWorkersAI()
    app = web.Application()
    app.router.add_post("/client/v4/accounts/acc123/ai/run/{model:.+}", fake.run)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("TURNOUT_TEST_CF_TOKEN", "cf-secret-token-0123")
    config = CloudflareConfig(
        kind="cloudflare",
        base_url=f"http://127.0.0.1:{port}/client/v4/accounts/acc123/ai/run",
        api_key="${TURNOUT_TEST_CF_TOKEN}",
        account_id="acc123",
    )
    provider = HTTPProvider("workers-ai", config, CloudflareUpstream(config.account_id))
    await provider.start()
    try:
        yield provider, fake
    finally:
        await provider.close()
        await runner.cleanup()


def call(model: str = MODEL) -> Call:
    return Call(model, Timeouts())


async def test_end_to_end_complete(workers_ai: tuple[HTTPProvider, FakeWorkersAI]) -> None:
    provider, fake = workers_ai
    handle = call()
    response = await provider.complete(request(max_tokens=50), handle)
    assert (response.content, response.usage) == ("Hello!", Usage(755, 10))
    assert handle.status == 200
    assert fake.bodies[-1] == {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 50}


async def test_end_to_end_stream(workers_ai: tuple[HTTPProvider, FakeWorkersAI]) -> None:
    provider, fake = workers_ai
    deltas = [delta async for delta in provider.stream(request(stream=True), call())]
    assert fake.bodies[-1]["stream"] is True
    assert "".join(d.content or "" for d in deltas) == "Hello! How can I help?"
    assert deltas[-1].finish_reason == "stop"
    assert [d.usage for d in deltas if d.usage] == [Usage(755, 10)]


async def test_end_to_end_json_mode_stream_is_fetched_whole(
    workers_ai: tuple[HTTPProvider, FakeWorkersAI],
) -> None:
    provider, fake = workers_ai
    schema_format = {
        "type": "json_schema",
        "json_schema": {"name": "c", "schema": JSON_MODE_SCHEMA},
    }
    json_request = request(JSON_MODE_MESSAGES, stream=True, response_format=schema_format)
    deltas = [delta async for delta in provider.stream(json_request, call())]
    sent = fake.bodies[-1]
    assert "stream" not in sent or sent["stream"] is False  # asked whole
    assert sent["response_format"] == {"type": "json_schema", "json_schema": JSON_MODE_SCHEMA}
    # one content delta, then finish and usage
    assert len(deltas) == 2
    first, last = deltas
    assert first.content is not None and orjson.loads(first.content) == JSON_MODE_ANSWER["response"]
    assert (last.finish_reason, last.usage) == ("stop", Usage(755, 10))


async def test_end_to_end_errors(workers_ai: tuple[HTTPProvider, FakeWorkersAI]) -> None:
    provider, _ = workers_ai
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(request([{"role": "user", "content": "busy"}]), call())
    assert (caught.value.error_class, caught.value.status, caught.value.retry_after) == (
        ErrorClass.RATE_LIMITED,
        429,
        2.0,
    )
    with pytest.raises(UpstreamError) as caught:
        async for _ in provider.stream(request(stream=True), call("@cf/meta/llama-9")):
            pass
    assert (caught.value.error_class, caught.value.code) == (ErrorClass.AUTH, "5007")
