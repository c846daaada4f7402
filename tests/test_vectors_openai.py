"""The OpenAI dialect against real recorded provider traffic (`tests/data/vectors`).

Every Chat Completions interaction recorded for OpenAI, OpenRouter, Groq, Cerebras, DeepSeek,
Mistral and Ollama is replayed through the pure dialect functions. Expectations are computed
from the recorded JSON by the small, independent readers below (never by the code under
test), and a handful of hand-checked literals pin specific cassettes so that the
parametrized tests cannot pass vacuously.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from tests.vectors import (
    OPENAI_COMPATIBLE,
    Interaction,
    chat_completions,
    find,
    load,
    require,
)
from turnout.dialects.classify import retry_after
from turnout.dialects.openai import ingress
from turnout.dialects.openai.upstream import (
    decode_chunk,
    decode_error,
    decode_response,
    encode_request,
)
from turnout.dialects.sse import SSEEvent, SSEParser
from turnout.model import ErrorClass, Response, UpstreamError, Usage

require(*OPENAI_COMPATIBLE)  # else the module is skipped, saying which recordings are not here
ALL = chat_completions()
COMPLETIONS = [
    item
    for item in ALL
    if item.status == 200
    and not item.is_stream
    and isinstance(item.response_json, dict)
    and "choices" in item.response_json
]
STREAMS = [item for item in ALL if item.status == 200 and item.is_stream]
# 200s without a usable answer: the recorder hit a test endpoint that echoes the request
UNUSABLE = [item for item in ALL if item.status == 200 and item not in COMPLETIONS + STREAMS]
ERRORS = [item for item in ALL if item.status >= 400]
REQUESTS = [item for item in ALL if isinstance(item.request_body, dict)]


def ids(item: Interaction) -> str:
    return item.id


# --- independent readers of the recorded JSON -------------------------------------------------


def recorded_text(content: Any) -> tuple[str, str]:
    """(answer, thinking) of a recorded `content`: a string, or Mistral's list of parts."""
    if isinstance(content, str):
        return content, ""
    answer, thinking = [], []
    for part in content or []:
        if part["type"] == "text":
            answer.append(part["text"])
        elif part["type"] == "thinking":
            thinking.extend(inner["text"] for inner in part["thinking"] if inner["type"] == "text")
    return "".join(answer), "".join(thinking)


def recorded_reasoning(message: dict[str, Any]) -> str:
    named = message.get("reasoning_content") or message.get("reasoning") or ""
    return named + recorded_text(message.get("content"))[1]


def expected_usage(raw: dict[str, Any]) -> Usage:
    prompt = raw["prompt_tokens"]
    completion = raw["completion_tokens"]
    reasoning = (raw.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    # Gemini's OpenAI endpoint counts its thinking in total_tokens only: it is billed output
    unreported = max(0, raw["total_tokens"] - prompt - completion)
    if unreported:
        completion += unreported
        reasoning = max(reasoning, unreported)
    cached = (raw.get("prompt_tokens_details") or {}).get("cached_tokens") or raw.get(
        "prompt_cache_hit_tokens", 0
    )
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        cost=raw.get("cost"),
    )


def recorded_chunks(text: str) -> list[dict[str, Any]]:
    """The JSON of every `data:` line of a recorded stream, up to `[DONE]`."""
    chunks = []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line.startswith("data:"):
            continue
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            break
        chunks.append(orjson.loads(payload))
    return chunks


@dataclass
class Accumulated:
    """What a client ends up with after reading a stream."""

    content: str = ""
    reasoning: str = ""
    # index -> {"id", "name", "arguments"}
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage | None = None
    done: bool = False


def _add_call(calls: dict[int, dict[str, str]], index: int, **part: str | None) -> None:
    call = calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
    call["id"] = call["id"] or part["id"] or ""
    call["name"] = call["name"] or part["name"] or ""
    call["arguments"] += part["arguments"] or ""


def expected_stream(chunks: list[dict[str, Any]]) -> Accumulated:
    """Accumulate recorded chunks, stopping where a chunk carries an `error` object."""
    out = Accumulated()
    for chunk in chunks:
        if chunk.get("error"):
            break
        usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
        if usage:
            out.usage = expected_usage(usage)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            answer, thinking = recorded_text(delta.get("content"))
            out.content += answer
            named = delta.get("reasoning_content") or delta.get("reasoning") or ""
            out.reasoning += named + thinking
            for call in delta.get("tool_calls") or []:
                function = call.get("function") or {}
                _add_call(
                    out.tool_calls,
                    call["index"],
                    id=call.get("id"),
                    name=function.get("name"),
                    arguments=function.get("arguments"),
                )
            out.finish_reason = choice.get("finish_reason") or out.finish_reason
    return out


# --- driving the code under test --------------------------------------------------------------


def parse(raw: bytes, size: int | None) -> list[SSEEvent]:
    """Feed `raw` to an SSEParser whole (size None) or in `size`-byte slices."""
    parser = SSEParser()
    pieces = [raw] if size is None else [raw[i : i + size] for i in range(0, len(raw), size)]
    events = [event for piece in pieces for event in parser.feed(piece)]
    return events + parser.flush()


def accumulate(events: list[SSEEvent], out: Accumulated) -> Accumulated:
    """Decode events into `out` the way a client would; UpstreamError propagates, leaving
    in `out` what arrived before it."""
    for event in events:
        delta = decode_chunk(event.data)
        if delta is None:
            out.done = True
            break
        if delta.usage is not None:
            out.usage = delta.usage
        out.content += delta.content or ""
        out.reasoning += delta.reasoning or ""
        for call in delta.tool_calls or []:
            _add_call(
                out.tool_calls, call.index, id=call.id, name=call.name, arguments=call.arguments
            )
        out.finish_reason = delta.finish_reason or out.finish_reason
    return out


def decode(item: Interaction) -> Response:
    return decode_response(orjson.dumps(item.response_json))


# --- what the vectors hold ----------------------------------------------------------------------


def test_vectors_are_partitioned() -> None:
    """Every in-scope interaction lands in exactly one category, and only Responses API and
    Gemini-native calls are left out of scope."""
    assert len(ALL) == len(COMPLETIONS) + len(STREAMS) + len(UNUSABLE) + len(ERRORS)
    assert (len(COMPLETIONS), len(STREAMS), len(UNUSABLE), len(ERRORS)) >= (80, 15, 2, 8)
    left_out = [item for item in load(OPENAI_COMPATIBLE) if not item.is_chat_completions]
    assert left_out, "the openai/ folder holds Responses API cassettes"
    assert all(
        item.path.endswith("/v1/responses") or item.path.endswith(":generateContent")
        for item in left_out
    )
    # mistral's stream was recorded against `.../chat/completions#stream`
    assert find("mistral/test_mistral_model_thinking_part_iter.yaml#0") in STREAMS


# --- non-streaming answers --------------------------------------------------------------------


@pytest.mark.parametrize("item", COMPLETIONS, ids=ids)
def test_decode_response(item: Interaction) -> None:
    body = item.response_json
    choice = body["choices"][0]
    message = choice["message"]
    response = decode(item)

    content = message.get("content")
    if isinstance(content, list):
        assert response.content == (recorded_text(content)[0] or None)
    else:
        assert response.content == content
    assert response.reasoning == (recorded_reasoning(message) or None)
    recorded_calls = message.get("tool_calls") or []
    assert [(call.name, call.arguments) for call in response.tool_calls] == [
        # a call without arguments (OpenRouter omits the key) reaches the client as "{}"
        (call["function"]["name"], call["function"].get("arguments") or "{}")
        for call in recorded_calls
    ]
    for call, recorded in zip(response.tool_calls, recorded_calls, strict=True):
        if recorded.get("id"):
            assert call.id == recorded["id"]
        else:
            assert call.id  # Gemini sends "id": "": the client needs one to answer to
    assert len({call.id for call in response.tool_calls}) == len(response.tool_calls)
    assert response.finish_reason == choice["finish_reason"]
    assert response.usage == expected_usage(body["usage"])
    assert response.usage.total_tokens == body["usage"]["total_tokens"]
    assert (response.id, response.model, response.created) == (
        body["id"],
        body["model"],
        body["created"],
    )


def test_pinned_plain_answer() -> None:
    response = decode(find("openai/test_valid_response.yaml#0"))
    assert response.content == "The capital of France is Paris."
    assert response.id == "chatcmpl-Bu8vBIrB8kIWKRyTcpEEPncjhHtMU"
    assert response.finish_reason == "stop"
    assert response.usage == Usage(prompt_tokens=14, completion_tokens=7)
    assert response.reasoning is None and response.tool_calls == []


def test_pinned_openrouter_cost_and_reasoning() -> None:
    response = decode(find("openrouter/test_openrouter_usage.yaml#1"))
    assert response.content is not None
    assert response.content.startswith(
        "Here\u2019s a concise but thorough overview of Mars \u2014 the fourth planet"
    )
    assert response.reasoning is not None
    assert response.reasoning.startswith("**Exploring Mars Overview**")
    assert response.usage == Usage(
        prompt_tokens=17, completion_tokens=2177, reasoning_tokens=960, cost=0.00435825
    )
    assert response.usage.total_tokens == 2194


def test_pinned_deepseek_reasoning_and_cache_hits() -> None:
    response = decode(find("deepseek/test_deepseek_model_thinking_part.yaml#0"))
    assert response.reasoning is not None
    assert response.reasoning.startswith("Okay, the user is asking how to cross the street.")
    assert response.content is not None
    assert response.content.startswith("Crossing the street safely involves careful observation")
    assert response.usage == Usage(prompt_tokens=12, completion_tokens=789, reasoning_tokens=415)
    cached = decode(find("deepseek/test_deepseek_deferred_capability_with_thinking.yaml#2"))
    assert (cached.usage.prompt_tokens, cached.usage.cached_tokens) == (976, 896)


def test_pinned_mistral_prompt_cache_and_thinking_parts() -> None:
    response = decode(find("mistral/test_mistral_history_uses_prompt_cache.yaml#1"))
    assert response.content == "cache probe two."
    assert response.usage == Usage(prompt_tokens=268, completion_tokens=5, cached_tokens=224)
    # magistral answers with content as a list of `thinking` and `text` parts
    thinking = decode(find("mistral/test_mistral_model_thinking_part.yaml#1"))
    assert thinking.content is not None and thinking.reasoning is not None
    assert thinking.content.startswith("Crossing a river is quite different from crossing a")
    assert thinking.reasoning.startswith("**Analogizing crossing a river**")
    assert "**Analogizing" not in thinking.content
    assert thinking.usage == Usage(prompt_tokens=664, completion_tokens=747)


def test_pinned_tool_calls() -> None:
    response = decode(find("openrouter/test_openrouter_tool_calling.yaml#0"))
    assert response.finish_reason == "tool_calls"
    [call] = response.tool_calls
    assert (call.id, call.name) == ("3sniiMddS", "divide")
    assert orjson.loads(call.arguments) == {
        "numerator": 123,
        "denominator": 456,
        "on_inf": "infinity",
    }
    # recorded without an `arguments` key at all
    response = decode(find("openrouter/test_openrouter_tool_optional_parameters.yaml#0"))
    [call] = response.tool_calls
    assert (call.id, call.name, call.arguments) == (
        "toolu_vrtx_015QAXScZzRDPttiPoc34AdD",
        "find_education_content",
        "{}",
    )
    assert response.content == "I'll search for education content for you."


def test_pinned_gemini_tool_call_without_id_and_hidden_thinking() -> None:
    response = decode(find("openai/test_compatible_api_with_tool_calls_without_id.yaml#0"))
    [call] = response.tool_calls
    assert call.id  # recorded as ""
    assert (call.name, call.arguments) == ("get_current_time", "{}")
    # recorded: prompt 35, completion 12, total 109: 62 thinking tokens billed as output
    assert response.usage == Usage(prompt_tokens=35, completion_tokens=74, reasoning_tokens=62)
    assert response.usage.total_tokens == 109


@pytest.mark.parametrize("item", UNUSABLE, ids=ids)
def test_unusable_200_is_invalid_output(item: Interaction) -> None:
    with pytest.raises(UpstreamError) as caught:
        decode_response(item.response_bytes)
    assert caught.value.error_class is ErrorClass.INVALID_OUTPUT
    assert caught.value.error_class.fails_over


def test_unusable_200s_are_the_echo_endpoints() -> None:
    assert {item.id for item in UNUSABLE} == {
        "openai/test_invalid_response.yaml#0",  # JSON without choices
        "openai/test_text_response.yaml#0",  # text/plain
    }


def test_error_object_in_a_200_answer() -> None:
    body = {"error": {"code": 502, "message": "Provider returned error"}}
    with pytest.raises(UpstreamError) as caught:
        decode_response(orjson.dumps(body))
    assert caught.value.error_class is ErrorClass.SERVER_ERROR
    assert caught.value.status == 502


# --- streams ------------------------------------------------------------------------------------

ERROR_STREAMS = {
    # groq validates the tool call it generated and fails it mid-stream: the model's fault,
    # another model may well produce a valid one
    "groq/test_tool_use_failed_error_streaming.yaml#0": ErrorClass.INVALID_OUTPUT,
    "groq/test_tool_use_failed_error_streaming_with_text.yaml#0": ErrorClass.INVALID_OUTPUT,
    # {"code":400,"message":"Token limit reached"} after finish_reason "length": the model ran
    # into the client's own max_completion_tokens (10), as the in-band 400 says. That is the
    # client's request, not the model's health: CLIENT_ERROR keeps it out of health and
    # failover (any model held to 10 tokens may do the same). Not CONTEXT_LENGTH: the 43-token
    # prompt fits, and a larger context window would not help.
    "openrouter/test_openrouter_stream_error.yaml#0": ErrorClass.CLIENT_ERROR,
}
SLICES = [None, 7, 1]


def _stream_has_error(item: Interaction) -> bool:
    return any(chunk.get("error") for chunk in recorded_chunks(item.response_text or ""))


def test_error_streams_are_the_expected_ones() -> None:
    assert {item.id for item in STREAMS if _stream_has_error(item)} == set(ERROR_STREAMS)


@pytest.mark.parametrize("size", SLICES, ids=lambda size: f"slices-{size or 'whole'}")
@pytest.mark.parametrize("item", STREAMS, ids=ids)
def test_sse_events_match_data_lines(item: Interaction, size: int | None) -> None:
    """One event per `data:` line (every recorded event is one line), named by the `event:`
    line before it if any (groq's `event: error`); comments are dropped."""
    raw = item.response_bytes
    expected: list[SSEEvent] = []
    name = None
    for line in raw.decode().split("\n"):
        if line.startswith("event:"):
            name = line[len("event:") :].strip()
        elif line.startswith("data:"):
            expected.append(SSEEvent(line[len("data:") :].strip(), name))
            name = None
    assert parse(raw, size) == expected
    assert not any(event.data.startswith(":") or "OPENROUTER" in event.data for event in expected)


@pytest.mark.parametrize("size", SLICES, ids=lambda size: f"slices-{size or 'whole'}")
@pytest.mark.parametrize("item", STREAMS, ids=ids)
def test_stream_accumulates(item: Interaction, size: int | None) -> None:
    chunks = recorded_chunks(item.response_text or "")
    expected = expected_stream(chunks)
    got = Accumulated()
    if item.id in ERROR_STREAMS:
        with pytest.raises(UpstreamError) as caught:
            accumulate(parse(item.response_bytes, size), got)
        assert caught.value.error_class is ERROR_STREAMS[item.id]
        [error] = [chunk["error"] for chunk in chunks if chunk.get("error")]
        assert caught.value.message.startswith(error["message"])
        assert not got.done
    else:
        accumulate(parse(item.response_bytes, size), got)
        assert got.done, "every recorded stream ends with [DONE]"
        assert got.usage == expected.usage and got.usage is not None
    # what arrived before an in-stream error is decoded exactly like the rest
    assert got.content == expected.content
    assert got.reasoning == expected.reasoning
    assert got.tool_calls == expected.tool_calls
    assert got.finish_reason == expected.finish_reason


def test_pinned_stream_text() -> None:
    item = find("openai/test_run_stream_sync_streams_real_model.yaml#1")
    got = accumulate(parse(item.response_bytes, 7), Accumulated())
    assert got.content == "The capital of the UK is London."
    assert got.finish_reason == "stop"
    assert got.usage == Usage(prompt_tokens=78, completion_tokens=9)


def test_pinned_stream_tool_call() -> None:
    item = find("openai/test_run_stream_sync_streams_real_model.yaml#0")
    got = accumulate(parse(item.response_bytes, 7), Accumulated())
    assert got.tool_calls == {
        0: {
            "id": "call_ZR5UUuTt3pf61kjwAJIYdVMj",
            "name": "get_capital",
            "arguments": '{"country":"UK"}',
        }
    }
    assert got.content == "" and got.finish_reason == "tool_calls"
    assert got.usage == Usage(prompt_tokens=53, completion_tokens=15)


def test_pinned_stream_reasoning_usage() -> None:
    deepseek = find("deepseek/test_deepseek_model_thinking_stream.yaml#0")
    got = accumulate(parse(deepseek.response_bytes, 7), Accumulated())
    assert (
        got.content == "Hello there! \N{SMILING FACE WITH SMILING EYES} How can I help you today?"
    )
    assert got.reasoning.startswith('Hmm, the user just said "Hello".')
    assert got.usage == Usage(prompt_tokens=6, completion_tokens=212, reasoning_tokens=198)
    # magistral streams its thinking as content parts
    mistral = find("mistral/test_mistral_model_thinking_part_iter.yaml#0")
    got = accumulate(parse(mistral.response_bytes, 7), Accumulated())
    assert got.reasoning.startswith("Okay, the user is asking how to cross the street.")
    assert got.content.startswith("To cross the street safely, follow these steps:")
    assert got.content.endswith("you can ensure a safe crossing.")
    assert got.usage == Usage(prompt_tokens=10, completion_tokens=232)


def test_pinned_groq_usage_in_x_groq() -> None:
    # this groq stream reports usage only as x_groq.usage on its last chunk
    item = find("groq/test_groq_model_web_search_tool_stream.yaml#0")
    chunks = recorded_chunks(item.response_text or "")
    assert not any(chunk.get("usage") for chunk in chunks)
    assert chunks[-1]["x_groq"]["usage"]["prompt_tokens"] == 5003
    got = accumulate(parse(item.response_bytes, 7), Accumulated())
    assert got.usage == Usage(prompt_tokens=5003, completion_tokens=359)


def test_pinned_openrouter_comments_and_stream_error() -> None:
    item = find("openrouter/test_openrouter_stream_error.yaml#0")
    assert item.response_bytes.count(b": OPENROUTER PROCESSING\n") == 17
    events = parse(item.response_bytes, 7)
    assert len(events) == 5  # 3 chunks, the error chunk, [DONE]: no comment became an event
    got = Accumulated()
    with pytest.raises(UpstreamError) as caught:
        accumulate(events, got)
    error = caught.value
    assert (error.error_class, error.status, error.message) == (
        ErrorClass.CLIENT_ERROR,
        400,
        "Token limit reached",
    )
    assert got.reasoning == "We need to respond to a greeting. The user"
    assert got.finish_reason == "length"


def test_pinned_groq_stream_error() -> None:
    item = find("groq/test_tool_use_failed_error_streaming.yaml#0")
    events = parse(item.response_bytes, 7)
    assert [event.event for event in events if event.event] == ["error"]
    with pytest.raises(UpstreamError) as caught:
        accumulate(events, Accumulated())
    error = caught.value
    assert error.error_class is ErrorClass.INVALID_OUTPUT
    assert (error.code, error.status, error.error_type) == (
        "tool_use_failed",
        400,
        "invalid_request_error",
    )
    assert error.message.startswith("Tool call validation failed")


def test_parallel_tool_calls_accumulate_per_index() -> None:
    # no recording streams two calls at once: OpenAI's shape, one call per chunk by index
    def chunk(index: int, **function: str) -> str:
        call: dict[str, Any] = {"index": index, "function": function}
        if "name" in function:
            call |= {"id": f"call_{index}", "type": "function"}
        return orjson.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}).decode()

    raw = "".join(
        f"data: {data}\n\n"
        for data in [
            chunk(0, name="get_weather", arguments=""),
            chunk(1, name="get_time", arguments=""),
            chunk(0, arguments='{"city":'),
            chunk(1, arguments='{"tz":"UTC"}'),
            chunk(0, arguments='"Paris"}'),
            '{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}',
            "[DONE]",
        ]
    )
    got = accumulate(parse(raw.encode(), 5), Accumulated())
    assert got.tool_calls == {
        0: {"id": "call_0", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        1: {"id": "call_1", "name": "get_time", "arguments": '{"tz":"UTC"}'},
    }
    assert got.finish_reason == "tool_calls" and got.done


def test_sse_parser_edges() -> None:
    parser = SSEParser()
    # CRLF line ends, a comment, a multi-line event, and a UTF-8 character cut in two
    raw = b': keep-alive\r\nevent: delta\r\ndata: {"a":\r\ndata: "\xc3\xa9"}\r\n\r\ndata: tail'
    cut = raw.index(b"\xa9")
    events = parser.feed(raw[:cut]) + parser.feed(raw[cut:])
    assert events == [SSEEvent('{"a":\n"\u00e9"}', "delta")]
    assert parser.flush() == [SSEEvent("tail")]
    assert parser.flush() == []


# --- error bodies --------------------------------------------------------------------------------

RECORDED_ERRORS: dict[str, ErrorClass] = {
    # 400 invalid_request_error: the client's request is wrong; return it as is
    "openai/test_openai_o1_mini_system_role[developer].yaml#0": ErrorClass.CLIENT_ERROR,
    "openai/test_openai_o1_mini_system_role[system].yaml#0": ErrorClass.CLIENT_ERROR,
    "openai/test_openai_web_search_tool_model_not_supported.yaml#0": ErrorClass.CLIENT_ERROR,
    # OpenRouter's 429 when the free upstream is rate-limited
    "openrouter/test_openrouter_errors_raised.yaml#0": ErrorClass.RATE_LIMITED,
    "openrouter/test_openrouter_errors_raised.yaml#1": ErrorClass.RATE_LIMITED,
    "openrouter/test_openrouter_errors_raised.yaml#2": ErrorClass.RATE_LIMITED,
    # 404 model_not_found: our config names a model the upstream does not have
    "groq/test_tool_regular_error.yaml#0": ErrorClass.AUTH,
    # 400 tool_use_failed: the model's output was invalid, not the client's request
    "groq/test_tool_use_failed_error.yaml#0": ErrorClass.INVALID_OUTPUT,
    "groq/test_tool_use_failed_error_with_text.yaml#0": ErrorClass.INVALID_OUTPUT,
}


def test_recorded_errors_are_all_classified_here() -> None:
    assert {item.id for item in ERRORS} == set(RECORDED_ERRORS)


@pytest.mark.parametrize("item", ERRORS, ids=ids)
def test_decode_recorded_error(item: Interaction) -> None:
    error = decode_error(item.status, item.response_bytes, item.response_headers)
    recorded = item.response_json["error"]
    assert error.error_class is RECORDED_ERRORS[item.id]
    assert error.status == item.status
    assert error.message.startswith(recorded["message"])
    assert error.code == (recorded.get("code") if isinstance(recorded.get("code"), str) else None)
    assert error.error_type == recorded.get("type")
    assert error.param == recorded.get("param")
    assert error.retry_after is None  # none of these recorded a Retry-After
    assert error.error_class.fails_over is (error.error_class is not ErrorClass.CLIENT_ERROR)


def test_pinned_recorded_errors() -> None:
    item = find("openai/test_openai_o1_mini_system_role[developer].yaml#0")
    error = decode_error(item.status, item.response_bytes, item.response_headers)
    assert (error.code, error.param, error.error_type) == (
        "unsupported_value",
        "messages[0].role",
        "invalid_request_error",
    )
    item = find("openrouter/test_openrouter_errors_raised.yaml#0")
    error = decode_error(item.status, item.response_bytes, item.response_headers)
    # OpenRouter's own message is generic: the provider's words are in metadata.raw
    assert error.message.startswith("Provider returned error: google/gemini-2.0-flash-exp:free")
    assert "temporarily rate-limited upstream" in error.message


def _openai_error(message: str, kind: str, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def _gemini_error(code: int, message: str, status: str) -> bytes:
    # Gemini's OpenAI-compatible endpoint wraps its error object in a JSON array
    return orjson.dumps([{"error": {"code": code, "message": message, "status": status}}])


SYNTHETIC_ERRORS: list[tuple[str, int, bytes, ErrorClass]] = [
    (
        "openai-insufficient-quota",
        429,
        _openai_error(
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        ),
        ErrorClass.QUOTA,
    ),
    (
        "openai-rate-limit",
        429,
        _openai_error("Rate limit reached for gpt-4o-mini", "requests", "rate_limit_exceeded"),
        ErrorClass.RATE_LIMITED,
    ),
    (
        "openai-context-length",
        400,
        _openai_error(
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 130000 tokens.",
            "invalid_request_error",
            "context_length_exceeded",
            "messages",
        ),
        ErrorClass.CONTEXT_LENGTH,
    ),
    (
        "vllm-context-length-no-error-key",
        400,
        orjson.dumps(
            {
                "object": "error",
                "message": "This model's maximum context length is 4096 tokens.",
                "type": "BadRequestError",
                "code": 400,
            }
        ),
        ErrorClass.CONTEXT_LENGTH,
    ),
    (
        "openai-invalid-key",
        401,
        _openai_error("Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
        ErrorClass.AUTH,
    ),
    ("forbidden", 403, b'{"error": {"message": "Forbidden"}}', ErrorClass.AUTH),
    (
        "openrouter-402",
        402,
        orjson.dumps({"error": {"code": 402, "message": "Insufficient credits"}}),
        ErrorClass.QUOTA,
    ),
    (
        "overloaded-529",
        529,
        orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "x"}}),
        ErrorClass.OVERLOADED,
    ),
    (
        "non-json-503",
        503,
        b"<html><body>Service Unavailable</body></html>",
        ErrorClass.SERVER_ERROR,
    ),
    ("empty-500", 500, b"", ErrorClass.SERVER_ERROR),
    ("gateway-timeout-504", 504, b"upstream timed out", ErrorClass.TIMEOUT),
    (
        "gemini-array-429",
        429,
        _gemini_error(429, "Resource has been exhausted.", "RESOURCE_EXHAUSTED"),
        ErrorClass.RATE_LIMITED,
    ),
    (
        "gemini-array-400",
        400,
        _gemini_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT"),
        ErrorClass.CLIENT_ERROR,
    ),
    (
        "gemini-array-503",
        503,
        _gemini_error(503, "The service is currently unavailable.", "UNAVAILABLE"),
        ErrorClass.SERVER_ERROR,
    ),
]


@pytest.mark.parametrize(
    ("status", "body", "error_class"),
    [case[1:] for case in SYNTHETIC_ERRORS],
    ids=[case[0] for case in SYNTHETIC_ERRORS],
)
def test_decode_synthetic_error(status: int, body: bytes, error_class: ErrorClass) -> None:
    error = decode_error(status, body, {})
    assert error.error_class is error_class
    assert error.status == status
    assert error.message  # never empty, even for an empty body


def test_synthetic_error_details() -> None:
    error = decode_error(503, b"<html><body>Service Unavailable</body></html>", {})
    assert "Service Unavailable" in error.message
    assert decode_error(500, b"", {}).message == "HTTP 500"
    error = decode_error(429, _gemini_error(429, "Resource has been exhausted.", "X"), {})
    assert error.message == "Resource has been exhausted."
    error = decode_error(400, SYNTHETIC_ERRORS[2][2], {})
    assert (error.code, error.param) == ("context_length_exceeded", "messages")


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "20"}, 20.0),
        ({"retry-after": "20"}, 20.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After-Ms": "1500", "Retry-After": "20"}, 1.5),  # the precise one wins
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
    ids=["seconds", "lower-case", "ms", "ms-wins", "garbage", "absent"],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert decode_error(429, b"{}", headers).retry_after == seconds


def test_retry_after_http_date() -> None:
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after({"Retry-After": date}, now=now) == pytest.approx(30, abs=1)
    waited = decode_error(503, b"", {"Retry-After": date}).retry_after
    assert waited is not None and 25 <= waited <= 31
    past = email.utils.formatdate(now - 60, usegmt=True)
    assert retry_after({"Retry-After": past}, now=now) == 0.0


# --- request encoding ----------------------------------------------------------------------------

# fields the dialect interprets; a recorded null means "the provider's default", so they go
INTERPRETED = ("max_tokens", "temperature", "top_p", "stop", "tools", "tool_choice")
INTERPRETED += ("response_format", "user")


def expected_body(recorded: dict[str, Any]) -> dict[str, Any]:
    """The recorded body with the encoder's deliberate differences applied."""
    expected = dict(recorded)
    stream = bool(recorded.get("stream", False))
    if stream:
        # always asked for: accounting needs usage even when the client did not ask
        expected["stream_options"] = {"include_usage": True}
    else:
        expected.pop("stream", None)  # `"stream": false` is the default: not sent
    if isinstance(expected.get("stop"), str):
        expected["stop"] = [expected["stop"]]
    # `n` is checked (1 or absent) and never passed on: one choice is the default everywhere
    expected.pop("n", None)
    for name in INTERPRETED:
        if name in expected and expected[name] is None:
            del expected[name]
    return expected


@pytest.mark.parametrize("item", REQUESTS, ids=ids)
def test_encode_request(item: Interaction) -> None:
    recorded = item.request_body
    stream = bool(recorded.get("stream", False))
    request = ingress.decode_request(orjson.dumps(recorded))
    body = encode_request(request, recorded["model"], stream=stream)
    assert body == expected_body(recorded)
    # and it is the same on the wire, down to the JSON types
    assert orjson.loads(orjson.dumps(body)) == expected_body(recorded)


def test_encoder_differences_are_exercised() -> None:
    """Each deliberate difference above is met by at least one real recorded request."""
    bodies = {item.id: item.request_body for item in REQUESTS}
    assert any("max_completion_tokens" in body for body in bodies.values())
    assert any(body.get("stream") and "stream_options" not in body for body in bodies.values())
    assert any(body.get("stream") is False for body in bodies.values())
    assert any("stop" in body and body["stop"] is None for body in bodies.values())

    item = find("openai/test_max_completion_tokens[o3-mini].yaml#0")
    body = encode_request(
        ingress.decode_request(orjson.dumps(item.request_body)), "o3-mini", stream=False
    )
    # sent under the client's own name: OpenAI's reasoning models refuse max_tokens
    assert body["max_completion_tokens"] == 100 and "max_tokens" not in body

    item = find("openrouter/test_openrouter_stream_error.yaml#0")
    body = encode_request(ingress.decode_request(orjson.dumps(item.request_body)), "m", stream=True)
    assert (body["model"], body["stream"], body["max_completion_tokens"]) == ("m", True, 10)
    assert body["stream_options"] == {"include_usage": True}


def test_pinned_request_fields() -> None:
    def encoded(interaction_id: str) -> dict[str, Any]:
        recorded = find(interaction_id).request_body
        request = ingress.decode_request(orjson.dumps(recorded))
        return encode_request(request, recorded["model"], stream=bool(recorded.get("stream")))

    assert encoded("openai/test_user_id.yaml#0")["user"] == "user_id"
    penalties = encoded("mistral/test_mistral_forwards_penalties.yaml#0")
    assert "frequency_penalty" in penalties and "presence_penalty" in penalties
    native = encoded("openai/test_openai_native_output.yaml#0")
    assert native["response_format"]["type"] == "json_schema"
    tools = encoded("openai/test_openai_tool_output.yaml#0")
    assert tools["tools"][0]["type"] == "function" and "tool_choice" in tools
