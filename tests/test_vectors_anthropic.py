"""The Anthropic dialect against real recorded Messages API traffic (`tests/data/vectors/anthropic`).

Every `POST /v1/messages` interaction is replayed through the pure dialect functions (the
folder also holds count_tokens calls, a Bedrock `invoke`, and OpenAI Responses and Gemini
calls made in the same tests: those are out of scope; multimodal cassettes were left out of
the folder when it was made, and any request with an image or document is skipped here).
Expectations come from the small, independent readers below, never from the code under test,
and hand-checked literals pin specific cassettes so the parametrized tests cannot pass
vacuously.

Request encoding is checked twice over:
- as is: a request from an Anthropic client going to an Anthropic upstream reproduces the
  recorded body exactly (`"stream": false` aside), through AnthropicRequest.native;
- translated: the same request stripped to the internal (OpenAI-shaped) fields, as a request
  from an OpenAI client would be, reproduces the recorded system, messages, tools,
  tool_choice, max_tokens, temperature, top_p, stop_sequences and metadata, less what
  turnout does not model. `translated()` applies those differences one by one; they are:
  - top-level fields: thinking, top_k, mcp_servers, container, context_management,
    cache_control, output_config's effort and task_budget (turnout has no field for them;
    output_config.format is modelled, as response_format)
  - server tools (web_search, code_execution, memory, advisor, tool search) and custom
    tools' defer_loading and cache_control: only function tools exist in the OpenAI shape
  - blocks: thinking and redacted_thinking, server tools' calls and results, compaction,
    cache_control and citations on text, is_error on tool results, system-role turns that
    hold no text (tool_addition)
  - an assistant turn's text blocks become one (OpenAI hosts take assistant text as one
    string), `type: custom` on a tool is implied
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from tests.vectors import Interaction, find, load_folder, require
from turnout.dialects.anthropic import INGRESS, AnthropicRequest, AnthropicUpstream
from turnout.dialects.anthropic.upstream import AnthropicStreamDecoder, decode_error
from turnout.dialects.sse import SSEEvent, SSEParser
from turnout.model import ErrorClass, Request, Response, UpstreamError, Usage

UPSTREAM = AnthropicUpstream()
require("anthropic")  # else the module is skipped, saying the recordings are not here
ALL = list(load_folder("anthropic"))


def _multimodal(item: Interaction) -> bool:
    """An image or document the client sent (a web page fetched by a server tool and replayed
    in its result block is the server tool's business, not the client's input)."""
    blocks = [
        block
        for message in (item.request_body or {}).get("messages") or ()
        if isinstance(message["content"], list)
        for block in message["content"]
    ]
    blocks += [
        inner
        for block in blocks
        if block["type"] == "tool_result" and isinstance(block.get("content"), list)
        for inner in block["content"]
    ]
    return any(block["type"] in ("image", "document") for block in blocks)


MESSAGES = [item for item in ALL if item.path == "/v1/messages" and not _multimodal(item)]
COMPLETIONS = [item for item in MESSAGES if item.status == 200 and not item.is_stream]
STREAMS = [item for item in MESSAGES if item.status == 200 and item.is_stream]
# error bodies have one shape on every endpoint: count_tokens' are Anthropic's words too
ERRORS = [item for item in ALL if item.status >= 400 and "anthropic.com" in item.uri]
REQUESTS = [item for item in MESSAGES if isinstance(item.request_body, dict)]


def ids(item: Interaction) -> str:
    return item.id


# --- independent readers of the recorded JSON -------------------------------------------------

FINISH = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


def expected_usage(raw: dict[str, Any]) -> Usage:
    cached = raw.get("cache_read_input_tokens") or 0
    return Usage(
        prompt_tokens=raw["input_tokens"] + cached + (raw.get("cache_creation_input_tokens") or 0),
        completion_tokens=raw["output_tokens"],
        cached_tokens=cached,
        reasoning_tokens=(raw.get("output_tokens_details") or {}).get("thinking_tokens", 0),
    )


@dataclass
class Answer:
    """What a client ends up with: from a whole message, or after reading a stream."""

    content: str = ""
    reasoning: str = ""
    # ordinal -> {"id", "name", "arguments"}
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage | None = None
    role: str | None = None


def expected_message(body: dict[str, Any]) -> Answer:
    out = Answer(finish_reason=FINISH[body["stop_reason"]], usage=expected_usage(body["usage"]))
    for block in body["content"]:
        if block["type"] == "text":
            out.content += block["text"]
        elif block["type"] == "thinking":
            out.reasoning += block["thinking"]
        elif block["type"] == "tool_use":
            call = {"id": block["id"], "name": block["name"], "arguments": block["input"]}
            out.tool_calls[len(out.tool_calls)] = call
    return out


def recorded_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, JSON data) of each event of a recorded stream."""
    events, name = [], None
    for line in text.split("\n"):
        if line.startswith("event:"):
            name = line[len("event:") :].strip()
        elif line.startswith("data:"):
            events.append((name, orjson.loads(line[len("data:") :])))
    return events


def expected_stream(text: str) -> Answer:
    out = Answer(role="assistant")
    usage: dict[str, Any] = {}
    kinds: dict[int, str] = {}
    tools: dict[int, dict[str, Any]] = {}  # block index -> call
    for name, data in recorded_events(text):
        if name == "message_start":
            usage.update(data["message"]["usage"])
        elif name == "content_block_start":
            block = data["content_block"]
            kinds[data["index"]] = block["type"]
            if block["type"] == "tool_use":
                tools[data["index"]] = {"id": block["id"], "name": block["name"], "arguments": ""}
        elif name == "content_block_delta":
            delta, kind = data["delta"], kinds[data["index"]]
            if delta["type"] == "text_delta":
                out.content += delta["text"]
            elif delta["type"] == "thinking_delta":
                out.reasoning += delta["thinking"]
            elif delta["type"] == "input_json_delta" and kind == "tool_use":
                tools[data["index"]]["arguments"] += delta["partial_json"]
        elif name == "message_delta":
            usage.update({k: v for k, v in data["usage"].items() if v is not None})
            out.finish_reason = FINISH[data["delta"]["stop_reason"]]
    for ordinal, index in enumerate(sorted(tools)):
        call = tools[index]
        call["arguments"] = orjson.loads(call["arguments"] or "{}")
        out.tool_calls[ordinal] = call
    out.usage = expected_usage(usage)
    return out


# --- driving the code under test --------------------------------------------------------------


def parse(raw: bytes, size: int | None) -> list[SSEEvent]:
    parser = SSEParser()
    pieces = [raw] if size is None else [raw[i : i + size] for i in range(0, len(raw), size)]
    return [event for piece in pieces for event in parser.feed(piece)] + parser.flush()


def read_stream(events: list[SSEEvent], decoder: AnthropicStreamDecoder, out: Answer) -> Answer:
    """Decode events into `out` as a client would; UpstreamError propagates."""
    for event in events:
        for delta in decoder.event(event):
            out.role = delta.role or out.role
            out.content += delta.content or ""
            out.reasoning += delta.reasoning or ""
            for call in delta.tool_calls or ():
                slot = out.tool_calls.setdefault(
                    call.index, {"id": "", "name": "", "arguments": ""}
                )
                slot["id"] = slot["id"] or call.id or ""
                slot["name"] = slot["name"] or call.name or ""
                slot["arguments"] += call.arguments
            out.finish_reason = delta.finish_reason or out.finish_reason
            out.usage = delta.usage or out.usage
        if decoder.done:
            break
    return out


def as_answer(response: Response) -> Answer:
    calls = {
        i: {"id": c.id, "name": c.name, "arguments": orjson.loads(c.arguments)}
        for i, c in enumerate(response.tool_calls)
    }
    return Answer(
        content=response.content or "",
        reasoning=response.reasoning or "",
        tool_calls=calls,
        finish_reason=response.finish_reason,
        usage=response.usage,
    )


# --- what the vectors hold ----------------------------------------------------------------------


def test_vectors_are_partitioned() -> None:
    assert len(MESSAGES) == len(COMPLETIONS) + len(STREAMS) + 1  # and the one recorded 400
    assert (len(COMPLETIONS), len(STREAMS), len(ERRORS)) >= (89, 13, 2)
    left_out = {item.path.rsplit("/", 1)[-1] for item in ALL if item.path != "/v1/messages"}
    assert left_out == {"count_tokens", "invoke", "responses", "gemini-2.0-flash:generateContent"}
    assert not [item for item in ALL if item.path == "/v1/messages" and _multimodal(item)]
    assert b'"type":"document"' in orjson.dumps(
        find("anthropic/test_anthropic_web_fetch_tool.yaml#1").request_body
    )


# --- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("item", COMPLETIONS, ids=ids)
def test_decode_response(item: Interaction) -> None:
    response = UPSTREAM.decode_response(item.response_bytes)
    assert as_answer(response) == expected_message(item.response_json)
    assert (response.id, response.model) == (item.response_json["id"], item.response_json["model"])
    if not response.tool_calls:
        assert response.content is not None


@pytest.mark.parametrize("size", [None, 7, 61], ids=["whole", "7-bytes", "61-bytes"])
@pytest.mark.parametrize("item", STREAMS, ids=ids)
def test_decode_stream(item: Interaction, size: int | None) -> None:
    decoder = UPSTREAM.stream_decoder()
    got = read_stream(parse(item.response_bytes, size), decoder, Answer())
    for call in got.tool_calls.values():
        call["arguments"] = orjson.loads(call["arguments"])
    assert got == expected_stream(item.response_text or "")
    assert decoder.done and decoder.finished


def test_pinned_plain_answer() -> None:
    item = find("anthropic/test_extra_headers.yaml#0")
    response = UPSTREAM.decode_response(item.response_bytes)
    assert response.content == (
        "Hi there! How are you doing today? Is there anything I can help you with?"
    )
    assert response.finish_reason == "stop"
    assert response.usage == Usage(prompt_tokens=8, completion_tokens=21)


def test_pinned_cache_reads_count_as_prompt() -> None:
    response = UPSTREAM.decode_response(
        find("anthropic/test_anthropic_cache_count_tokens.yaml#1").response_bytes
    )
    # input_tokens 3 + cache_read_input_tokens 1111: OpenAI counts (and bills) all as prompt
    assert response.usage == Usage(prompt_tokens=1114, completion_tokens=414, cached_tokens=1111)


def test_pinned_thinking_and_tool_calls() -> None:
    response = UPSTREAM.decode_response(
        find("anthropic/test_multiple_parallel_tool_calls.yaml#0").response_bytes
    )
    assert response.finish_reason == "tool_calls"
    assert [call.name for call in response.tool_calls]
    assert all(call.id.startswith("toolu_") for call in response.tool_calls)
    response = UPSTREAM.decode_response(
        find("anthropic/test_anthropic_model_thinking_part.yaml#0").response_bytes
    )
    assert response.reasoning and response.content
    assert response.reasoning != response.content


def test_pinned_server_tools_are_not_client_calls() -> None:
    item = find("anthropic/test_anthropic_web_search_tool.yaml#0")
    kinds = [block["type"] for block in item.response_json["content"]]
    assert "server_tool_use" in kinds and "web_search_tool_result" in kinds
    response = UPSTREAM.decode_response(item.response_bytes)
    assert response.tool_calls == [] and response.finish_reason == "stop"
    assert response.content  # the answer's text blocks, joined


def test_pinned_stream_with_thinking() -> None:
    item = find("anthropic/test_anthropic_model_thinking_part_stream.yaml#0")
    got = read_stream(parse(item.response_bytes, 5), UPSTREAM.stream_decoder(), Answer())
    assert got.reasoning.startswith("This is a straightforward question about pedestrian safety.")
    assert got.content.startswith("Here are the basic steps for safely crossing the street:")
    assert got.role == "assistant" and got.finish_reason == "stop"
    assert got.usage is not None and got.usage.prompt_tokens == 43


def test_pinned_stream_server_tool_input_is_not_a_call() -> None:
    item = find("anthropic/test_anthropic_model_web_search_tool_stream.yaml#0")
    assert b"input_json_delta" in item.response_bytes
    got = read_stream(parse(item.response_bytes, 11), UPSTREAM.stream_decoder(), Answer())
    assert got.tool_calls == {} and got.content and got.finish_reason == "stop"


# --- errors ---------------------------------------------------------------------------------------

RECORDED_ERRORS: dict[str, ErrorClass] = {
    # 400 invalid_request_error: the client asked for an effort level this model lacks
    "anthropic/test_anthropic_explicit_effort_xhigh_unsupported_model_errors.yaml#0": (
        ErrorClass.CLIENT_ERROR
    ),
    # 404 not_found_error on the model: our config names a model Anthropic does not have
    "anthropic/test_anthropic_count_tokens_error.yaml#0": ErrorClass.AUTH,
}


def test_recorded_errors_are_all_classified_here() -> None:
    assert {item.id for item in ERRORS} == set(RECORDED_ERRORS)


@pytest.mark.parametrize("item", ERRORS, ids=ids)
def test_decode_recorded_error(item: Interaction) -> None:
    error = decode_error(item.status, item.response_bytes, item.response_headers)
    recorded = item.response_json["error"]
    assert error.error_class is RECORDED_ERRORS[item.id]
    assert (error.status, error.message, error.error_type) == (
        item.status,
        recorded["message"],
        recorded["type"],
    )
    assert error.retry_after is None


def _error(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


SYNTHETIC_ERRORS: list[tuple[str, int, bytes, ErrorClass]] = [
    ("overloaded", 529, _error("overloaded_error", "Overloaded"), ErrorClass.OVERLOADED),
    (
        "rate-limit",
        429,
        _error("rate_limit_error", "This request would exceed the rate limit for your org"),
        ErrorClass.RATE_LIMITED,
    ),
    ("api-error", 500, _error("api_error", "Internal server error"), ErrorClass.SERVER_ERROR),
    (
        "bad-key",
        401,
        _error("authentication_error", "invalid x-api-key"),
        ErrorClass.AUTH,
    ),
    (
        "no-permission",
        403,
        _error("permission_error", "Your API key does not have permission"),
        ErrorClass.AUTH,
    ),
    (
        "prompt-too-long",
        400,
        _error("invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
        ErrorClass.CONTEXT_LENGTH,
    ),
    (
        "context-limit",
        400,
        _error(
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000",
        ),
        ErrorClass.CONTEXT_LENGTH,
    ),
    (
        "credit-balance",
        400,
        _error(
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans &"
            " Billing to upgrade or purchase credits.",
        ),
        ErrorClass.QUOTA,
    ),
    (
        "usage-limits",
        400,
        _error(
            "invalid_request_error",
            "You have reached your specified API usage limits. You will regain access on"
            " 2025-07-01 at 00:00 UTC.",
        ),
        ErrorClass.QUOTA,
    ),
    ("billing", 402, _error("billing_error", "Payment required"), ErrorClass.QUOTA),
    (
        "too-large",
        413,
        _error("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        ErrorClass.CLIENT_ERROR,
    ),
    ("timeout", 504, _error("timeout_error", "Request timed out"), ErrorClass.TIMEOUT),
    ("empty-529", 529, b"", ErrorClass.OVERLOADED),
    ("html-502", 502, b"<html>Bad Gateway</html>", ErrorClass.SERVER_ERROR),
    ("unknown-type-503", 503, _error("brand_new_error", "?"), ErrorClass.SERVER_ERROR),
]


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [case[1:] for case in SYNTHETIC_ERRORS],
    ids=[case[0] for case in SYNTHETIC_ERRORS],
)
def test_decode_synthetic_error(status: int, body: bytes, error_class: ErrorClass) -> None:
    error = decode_error(status, body, {})
    assert error.error_class is error_class
    assert error.status == status and error.message


def test_retry_after_and_errors_inside_answers() -> None:
    error = decode_error(429, _error("rate_limit_error", "slow down"), {"retry-after": "17"})
    assert (error.error_class, error.retry_after) == (ErrorClass.RATE_LIMITED, 17.0)
    assert decode_error(500, b"", {}).message == "HTTP 500"
    with pytest.raises(UpstreamError) as caught:
        UPSTREAM.decode_response(_error("overloaded_error", "Overloaded"))
    assert caught.value.error_class is ErrorClass.OVERLOADED
    with pytest.raises(UpstreamError) as caught:
        UPSTREAM.decode_response(b"<html>")
    assert caught.value.error_class is ErrorClass.INVALID_OUTPUT


@pytest.mark.parametrize(
    ("kind", "error_class"),
    [
        ("overloaded_error", ErrorClass.OVERLOADED),
        ("rate_limit_error", ErrorClass.RATE_LIMITED),
        ("api_error", ErrorClass.SERVER_ERROR),
    ],
)
def test_error_event_inside_a_stream(kind: str, error_class: ErrorClass) -> None:
    """An `error` event after text: what arrived stays, then the classified error."""
    item = find("anthropic/test_request_stream_fallback_for_high_max_tokens.yaml#0")
    raw = item.response_bytes
    cut = raw.index(b"event: message_delta")
    error = b"event: error\ndata: " + _error(kind, "Overloaded") + b"\n\n"
    decoder = UPSTREAM.stream_decoder()
    got = Answer()
    with pytest.raises(UpstreamError) as caught:
        read_stream(parse(raw[:cut] + error, 9), decoder, got)
    assert caught.value.error_class is error_class
    assert caught.value.error_type == kind
    assert got.content and got.finish_reason is None
    assert not decoder.finished


# --- request encoding -----------------------------------------------------------------------------


def encode(request: Request, recorded: dict[str, Any]) -> dict[str, Any]:
    body = UPSTREAM.encode_request(request, recorded["model"], bool(recorded.get("stream")))
    return orjson.loads(orjson.dumps(body))  # as it goes on the wire, down to the JSON types


def as_is(recorded: dict[str, Any]) -> dict[str, Any]:
    expected = dict(recorded)
    if expected.get("stream") is False:
        del expected["stream"]  # the default: not sent
    return expected


def plain(request: AnthropicRequest) -> Request:
    """The internal fields only: the request as an OpenAI client could have sent it."""
    return Request(**{f.name: getattr(request, f.name) for f in dataclasses.fields(Request)})


def _text_of(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": b["text"]} for b in blocks if b["type"] == "text"]


def _result(content: Any) -> Any:
    # a result whose blocks are all unmodelled (tool_reference) is left empty: ""
    return content if isinstance(content, str) else _text_of(content) or ""


def _turn(message: dict[str, Any]) -> list[dict[str, Any]] | str | None:
    content = message["content"]
    if isinstance(content, str):
        return (
            content if message["role"] == "user" else _text_of([{"type": "text", "text": content}])
        )
    if message["role"] == "user":
        results = [
            {
                "type": "tool_result",
                "tool_use_id": b["tool_use_id"],
                "content": _result(b["content"]),
            }
            for b in content
            if b["type"] == "tool_result"
        ]
        return results + _text_of(content) or None
    text = "".join(b["text"] for b in content if b["type"] == "text")
    calls = [
        {"type": "tool_use", "id": b["id"], "name": b["name"], "input": b["input"]}
        for b in content
        if b["type"] == "tool_use"
    ]
    return ([{"type": "text", "text": text}] if text else []) + calls or None


def translated(recorded: dict[str, Any]) -> dict[str, Any]:
    """The recorded body less what turnout does not model (see the module docstring)."""
    expected: dict[str, Any] = {"model": recorded["model"], "max_tokens": recorded["max_tokens"]}
    system = recorded.get("system")
    if system:
        expected["system"] = system if isinstance(system, str) else _text_of(system)
    turns: list[dict[str, Any]] = []
    for message in recorded["messages"]:
        if message["role"] == "system":
            assert not _text_of(message["content"]), "no recorded system turn holds text"
            continue
        content = _turn(message)
        if content is None:
            continue
        if turns and turns[-1]["role"] == message["role"]:
            previous = turns[-1]["content"]
            if isinstance(previous, str):
                previous = [{"type": "text", "text": previous}]
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            turns[-1]["content"] = previous + content
        else:
            turns.append({"role": message["role"], "content": content})
    expected["messages"] = turns
    tools = [
        {
            "name": tool["name"],
            **({"description": tool["description"]} if "description" in tool else {}),
            "input_schema": tool["input_schema"],
            **({"strict": tool["strict"]} if "strict" in tool else {}),
        }
        for tool in recorded.get("tools") or ()
        if tool.get("type", "custom") == "custom"
    ]
    if tools:
        expected["tools"] = tools
        if recorded.get("tool_choice"):
            expected["tool_choice"] = recorded["tool_choice"]
    output_format = (recorded.get("output_config") or {}).get("format")
    if output_format:
        expected["output_config"] = {"format": output_format}
    for name in ("temperature", "top_p", "stop_sequences", "metadata"):
        if recorded.get(name) is not None:
            expected[name] = recorded[name]
    if recorded.get("stream"):
        expected["stream"] = True
    return expected


@pytest.mark.parametrize("item", REQUESTS, ids=ids)
def test_encode_request_as_is(item: Interaction) -> None:
    recorded = item.request_body
    request = INGRESS.decode_request(orjson.dumps(recorded))
    assert isinstance(request, AnthropicRequest) and request.native is not None
    assert encode(request, recorded) == as_is(recorded)


@pytest.mark.parametrize("item", REQUESTS, ids=ids)
def test_encode_request_translated(item: Interaction) -> None:
    recorded = item.request_body
    request = plain(INGRESS.decode_request(orjson.dumps(recorded)))
    assert encode(request, recorded) == translated(recorded)


def test_translation_differences_are_exercised() -> None:
    """Each difference `translated()` applies is met by at least one recorded request."""
    bodies = [item.request_body for item in REQUESTS]
    blocks = [
        block
        for body in bodies
        for message in body["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
    ]
    kinds = {block["type"] for block in blocks}
    assert {"thinking", "redacted_thinking", "server_tool_use", "compaction"} <= kinds
    assert any(block.get("is_error") is False for block in blocks)
    assert any(any(message["role"] == "system" for message in b["messages"]) for b in bodies)
    assert any("cache_control" in body for body in bodies)
    assert any(isinstance(body.get("system"), list) for body in bodies)
    tools = [tool for body in bodies for tool in body.get("tools") or ()]
    assert any("type" in tool for tool in tools) and any("strict" in tool for tool in tools)
    assert any("defer_loading" in tool for tool in tools)
    for name in ("thinking", "top_k", "mcp_servers", "container", "context_management"):
        assert any(name in body for body in bodies), name
    # and a translated request really loses them, where the as-is one keeps them
    item = find("anthropic/test_anthropic_model_thinking_part.yaml#1")
    request = INGRESS.decode_request(orjson.dumps(item.request_body))
    assert "thinking" in encode(request, item.request_body)
    translated_body = encode(plain(request), item.request_body)
    assert "thinking" not in translated_body
    assert "thinking" not in orjson.dumps(translated_body["messages"]).decode()


def test_pinned_request_fields() -> None:
    def decoded(interaction_id: str) -> AnthropicRequest:
        return INGRESS.decode_request(orjson.dumps(find(interaction_id).request_body))

    request = decoded("anthropic/test_anthropic_sampling_settings_reach_the_wire.yaml#0")
    assert request.temperature == 0.2 and request.native.fields == {"top_k": 40}
    assert decoded("anthropic/test_extra_headers.yaml#0").user == "123"
    native = decoded("anthropic/test_anthropic_native_output_decimal_strict.yaml#0")
    assert native.response_format["type"] == "json_schema"
    assert native.response_format["json_schema"]["schema"]["required"] == ["amount"]
    forced = decoded("anthropic/test_anthropic_tool_output.yaml#1")
    assert forced.tool_choice == "required"
    assert [m["role"] for m in forced.messages] == ["user", "assistant", "tool"]
    assert forced.messages[2] == {
        "role": "tool",
        "tool_call_id": "toolu_01X9wcHKKAZD9tBC711xipPa",
        "content": "Mexico",
    }
    assert forced.messages[1]["tool_calls"][0]["function"] == {
        "name": "get_user_country",
        "arguments": "{}",
    }
    prompted = decoded("anthropic/test_anthropic_prompted_output.yaml#0")
    assert prompted.messages[0]["role"] == "system"
    assert prompted.messages[0]["content"].startswith("Always respond with a JSON object")
