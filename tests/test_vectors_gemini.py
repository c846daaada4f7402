"""The Gemini dialect against real recorded Gemini API traffic (`tests/data/vectors`).

Every `generateContent` / `streamGenerateContent` interaction recorded (the google/ folder,
the google stream in stream_close/, and the few Gemini calls recorded in other folders) is
replayed through the pure dialect functions:
- the recorded answer decodes to the text, thoughts, function calls, finish reason and usage
  that the small, independent readers below compute from the recorded JSON;
- streams decode the same whether the bytes arrive whole or in odd slices;
- each recorded request, translated back into the internal (OpenAI-shaped) Request that
  expresses its intent, encodes to the body the provider accepted, apart from the deliberate
  differences and skipped fields listed in DIFFERENCES / SKIPPED below.
No Gemini error was recorded: error bodies are built from Google's documentation and cited.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.vectors import Interaction, find, load, require
from turnout.config.schema import ProviderConfig, Timeouts
from turnout.dialects.gemini import UPSTREAM, GeminiStreamDecoder
from turnout.dialects.gemini.encode import SKIP_SIGNATURE
from turnout.dialects.openai.upstream import decode_error as openai_decode_error
from turnout.dialects.sse import SSEEvent, SSEParser
from turnout.model import ErrorClass, Request, Response, UpstreamError, Usage
from turnout.providers.base import Call
from turnout.providers.http import HTTPProvider

FOLDERS = ("google", "stream_close", "openai", "anthropic")
require(*FOLDERS)  # else the module is skipped, saying which recordings are not here
ALL = [
    item
    for item in load(FOLDERS)
    if item.path.endswith((":generateContent", ":streamGenerateContent"))
]
COMPLETIONS = [item for item in ALL if item.status == 200 and not item.is_stream]
STREAMS = [item for item in ALL if item.status == 200 and item.is_stream]
ERRORS = [item for item in ALL if item.status >= 400]
REQUESTS = [item for item in ALL if isinstance(item.request_body, dict)]


def ids(item: Interaction) -> str:
    return item.id


def recorded_json(item: Interaction) -> dict[str, Any]:
    # one cassette kept the body as text only
    return (
        item.response_json if item.response_json is not None else orjson.loads(item.response_bytes)
    )


# --- independent readers of the recorded JSON -------------------------------------------------

FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"}
FINISH |= {"MODEL_ARMOR": "content_filter"}


def expected_usage(meta: dict[str, Any] | None) -> Usage:
    meta = meta or {}
    thoughts = meta.get("thoughtsTokenCount", 0)
    return Usage(
        prompt_tokens=meta.get("promptTokenCount", 0) + meta.get("toolUsePromptTokenCount", 0),
        completion_tokens=meta.get("candidatesTokenCount", 0) + thoughts,
        cached_tokens=meta.get("cachedContentTokenCount", 0),
        reasoning_tokens=thoughts,
    )


@dataclass
class Accumulated:
    """What a client ends up with after reading an answer or a stream."""

    content: str = ""
    reasoning: str = ""
    # index -> {"id", "name", "arguments"}; arguments compared as parsed JSON
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage | None = None
    roles: list[str] = field(default_factory=list)


def expected_from_chunks(chunks: list[dict[str, Any]]) -> Accumulated:
    out = Accumulated()
    for chunk in chunks:
        if "usageMetadata" in chunk:
            out.usage = expected_usage(chunk["usageMetadata"])
        candidate = (chunk.get("candidates") or [{}])[0]
        for part in (candidate.get("content") or {}).get("parts") or []:
            if "text" in part:
                if part.get("thought"):
                    out.reasoning += part["text"]
                else:
                    out.content += part["text"]
            if "functionCall" in part:
                call = part["functionCall"]
                out.calls[len(out.calls)] = {
                    "id": call.get("id"),
                    "name": call["name"],
                    "arguments": call.get("args", {}),
                }
        if candidate.get("finishReason"):
            reason = FINISH[candidate["finishReason"]]
            out.finish_reason = "tool_calls" if out.calls and reason == "stop" else reason
        elif (chunk.get("promptFeedback") or {}).get("blockReason"):
            out.finish_reason = "content_filter"
    return out


def recorded_chunks(text: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(line[len("data:") :])
        for line in text.split("\n")
        if line.rstrip("\r").startswith("data:")
    ]


# --- driving the code under test --------------------------------------------------------------

SLICES = [None, 1, 7, 64]


def parse(raw: bytes, size: int | None) -> list[SSEEvent]:
    parser = SSEParser()
    pieces = [raw] if size is None else [raw[i : i + size] for i in range(0, len(raw), size)]
    return [event for piece in pieces for event in parser.feed(piece)] + parser.flush()


def accumulate(events: list[SSEEvent], decoder: GeminiStreamDecoder) -> Accumulated:
    out = Accumulated()
    for event in events:
        for delta in decoder.event(event):
            out.content += delta.content or ""
            out.reasoning += delta.reasoning or ""
            for call in delta.tool_calls or []:
                assert call.index not in out.calls, "Gemini sends each call whole"
                out.calls[call.index] = {
                    "id": call.id,
                    "name": call.name,
                    "arguments": orjson.loads(call.arguments),
                }
            out.finish_reason = delta.finish_reason or out.finish_reason
            out.usage = delta.usage or out.usage
            if delta.role:
                out.roles.append(delta.role)
        assert not decoder.done, "Gemini streams have no end event: the body ends"
    return out


def check_ids(got: dict[int, dict[str, Any]], expected: dict[int, dict[str, Any]]) -> None:
    """Recorded ids are kept; where Gemini gave none, each call still gets a unique one."""
    for index, call in expected.items():
        if call["id"]:
            assert got[index]["id"] == call["id"]
        else:
            assert got[index]["id"].startswith("call_")
    assert len({call["id"] for call in got.values()}) == len(got)


# --- what the vectors hold ----------------------------------------------------------------------


def test_vectors_are_partitioned() -> None:
    assert len(ALL) == len(COMPLETIONS) + len(STREAMS) + len(ERRORS)
    assert len(COMPLETIONS) >= 80 and len(STREAMS) >= 12
    assert not ERRORS, "no Gemini error was recorded: see the documented bodies below"
    assert find("stream_close/test_cancel_recorded_provider_stream[google].yaml#0") in STREAMS
    # every recorded Gemini URL is what url() builds from its base and model
    for item in ALL:
        base, _, rest = item.uri.partition("/models/")
        model = rest.split(":", 1)[0]
        assert UPSTREAM.url(base, model, item.is_stream) == item.uri
    assert UPSTREAM.url(UPSTREAM.default_base_url, "models/gemini-2.5-flash", True) == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash"
        ":streamGenerateContent?alt=sse"
    )
    assert UPSTREAM.auth_headers("k") == {"x-goog-api-key": "k"}
    assert UPSTREAM.auth_headers(None) == {}


# --- non-streaming answers --------------------------------------------------------------------


@pytest.mark.parametrize("item", COMPLETIONS, ids=ids)
def test_decode_response(item: Interaction) -> None:
    body = recorded_json(item)
    expected = expected_from_chunks([body])
    response = UPSTREAM.decode_response(item.response_bytes)

    has_text = any(
        "text" in part and not part.get("thought")
        for candidate in body.get("candidates") or []
        for part in (candidate.get("content") or {}).get("parts") or []
    )
    assert response.content == (expected.content if has_text else None)
    assert response.reasoning == (expected.reasoning or None)
    got = {
        i: {"id": call.id, "name": call.name, "arguments": orjson.loads(call.arguments)}
        for i, call in enumerate(response.tool_calls)
    }
    assert {i: (c["name"], c["arguments"]) for i, c in got.items()} == {
        i: (c["name"], c["arguments"]) for i, c in expected.calls.items()
    }
    check_ids(got, expected.calls)
    assert response.finish_reason == expected.finish_reason
    assert response.usage == expected_usage(body.get("usageMetadata"))
    assert response.usage.total_tokens == (body.get("usageMetadata") or {}).get(
        "totalTokenCount", 0
    )
    assert (response.id, response.model) == (body.get("responseId", ""), body["modelVersion"])
    if "createTime" in body:
        assert response.created == int(datetime.fromisoformat(body["createTime"]).timestamp())
    else:
        assert response.created > 0


def test_pinned_plain_answer() -> None:
    response = UPSTREAM.decode_response(find("google/test_google_model.yaml#0").response_bytes)
    assert response.content == "Hello! How can I help you today?"
    assert response.finish_reason == "stop"
    # 34 thinking tokens are billed output: completion is 9 + 34
    assert response.usage == Usage(prompt_tokens=9, completion_tokens=43, reasoning_tokens=34)
    assert (response.id, response.model) == ("bzlXaa_EE_aHqtsPi_zw8Ao", "gemini-2.5-flash")


def test_pinned_thoughts_and_calls() -> None:
    thinking = find("google/test_google_model_thinking_part.yaml#0")
    response = UPSTREAM.decode_response(thinking.response_bytes)
    assert response.reasoning and response.reasoning.startswith("**")
    assert response.content and response.content.startswith("Crossing the street safely")
    assert response.usage.reasoning_tokens == 1001

    parallel = find("google/test_google_instructions_only_with_tool_calls.yaml#0")
    response = UPSTREAM.decode_response(parallel.response_bytes)
    assert [call.name for call in response.tool_calls] == ["generate_topic"] * 3
    assert [call.arguments for call in response.tool_calls] == ["{}"] * 3
    assert response.finish_reason == "tool_calls" and response.content is None

    vertex = find(
        "google/test_google_vertex_tool_combination_omits_include_server_side_tool_invocations"
        ".yaml#0"
    )
    [call] = UPSTREAM.decode_response(vertex.response_bytes).tool_calls
    assert (call.id, call.name) == ("vcyiitct", "get_user_city")  # Vertex names its calls


def test_pinned_blocks_and_limits() -> None:
    def decoded(interaction_id: str) -> Response:
        return UPSTREAM.decode_response(find(interaction_id).response_bytes)

    blocked = decoded("google/test_google_model_armor_prompt_template_text_gets_blocked.yaml#1")
    assert (blocked.finish_reason, blocked.content, blocked.usage) == (
        "content_filter",
        None,
        Usage(),
    )
    unsafe = decoded("google/test_google_model_safety_settings.yaml#0")
    assert (unsafe.finish_reason, unsafe.content) == ("content_filter", None)
    armor = decoded("google/test_google_model_armor_response_template_real_block.yaml#0")
    assert armor.finish_reason == "content_filter"
    cut = decoded("google/test_google_model_max_tokens.yaml#0")
    assert (cut.finish_reason, cut.content) == ("length", "The capital of France is")
    # a thinking model spent the whole budget thinking: no text at all
    empty = decoded("google/test_google_model_max_tokens_thinking_model_empty_response.yaml#0")
    assert (empty.finish_reason, empty.content) == ("length", None)
    assert empty.usage == Usage(prompt_tokens=15, completion_tokens=2, reasoning_tokens=2)
    search = decoded("google/test_google_model_web_search_tool.yaml#0")
    # search results fed back to the model are billed input
    assert search.usage.prompt_tokens == 17 + 119


def _answer(candidate: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"candidates": [candidate], "responseId": "r", **extra})


@pytest.mark.parametrize(
    "reason", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"]
)
def test_broken_tool_call_is_invalid_output(reason: str) -> None:
    # a 200 the model could not finish: another model may well manage (not recorded)
    body = _answer({"content": {"parts": [{"text": "I will call"}]}, "finishReason": reason})
    with pytest.raises(UpstreamError) as caught:
        UPSTREAM.decode_response(body)
    assert caught.value.error_class is ErrorClass.INVALID_OUTPUT
    chunk = SSEEvent(_answer({"finishReason": reason}).decode())
    with pytest.raises(UpstreamError) as caught:
        list(GeminiStreamDecoder().event(chunk))
    assert caught.value.error_class is ErrorClass.INVALID_OUTPUT


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_documented_finish_reasons(reason: str, finish: str) -> None:
    body = _answer({"content": {"parts": [{"text": "x"}]}, "finishReason": reason})
    assert UPSTREAM.decode_response(body).finish_reason == finish


def test_cached_tokens_and_unusable_bodies() -> None:
    meta = {"promptTokenCount": 100, "cachedContentTokenCount": 60, "candidatesTokenCount": 5}
    body = _answer({"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"})
    response = UPSTREAM.decode_response(
        body[:-1] + b',"usageMetadata":' + orjson.dumps(meta) + b"}"
    )
    assert response.usage == Usage(prompt_tokens=100, completion_tokens=5, cached_tokens=60)
    for raw in (b"not json", b"[1]", b"[]", b'{"candidates": []}', b"{}"):
        with pytest.raises(UpstreamError) as caught:
            UPSTREAM.decode_response(raw)
        assert caught.value.error_class is ErrorClass.INVALID_OUTPUT
    # an error object inside a 200 is classified like an error body
    with pytest.raises(UpstreamError) as caught:
        UPSTREAM.decode_response(
            b'{"error": {"code": 503, "message": "x", "status": "UNAVAILABLE"}}'
        )
    assert (caught.value.error_class, caught.value.status) == (ErrorClass.SERVER_ERROR, 503)
    # the same, as a list (streamGenerateContent without alt=sse)
    with pytest.raises(UpstreamError) as caught:
        UPSTREAM.decode_response(b'[{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}]')
    assert (caught.value.error_class, caught.value.status) == (ErrorClass.RATE_LIMITED, 429)


def test_array_of_chunks_is_folded() -> None:
    # streamGenerateContent without alt=sse answers one JSON array of chunks
    item = find("google/test_google_stream_usage_is_live_mid_stream.yaml#0")
    chunks = recorded_chunks(item.response_text or "")
    response = UPSTREAM.decode_response(orjson.dumps(chunks))
    assert response.content == expected_from_chunks(chunks).content
    assert response.finish_reason == "stop"
    assert response.usage == expected_usage(chunks[-1]["usageMetadata"])


# --- streams ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SLICES, ids=lambda size: f"slices-{size or 'whole'}")
@pytest.mark.parametrize("item", STREAMS, ids=ids)
def test_stream_accumulates(item: Interaction, size: int | None) -> None:
    chunks = recorded_chunks(item.response_text or "")
    expected = expected_from_chunks(chunks)
    decoder = UPSTREAM.stream_decoder()
    got = accumulate(parse(item.response_bytes, size), decoder)
    assert decoder.finished, "every recorded stream saw a finishReason"
    assert got.content == expected.content
    assert got.reasoning == expected.reasoning
    assert {i: (c["name"], c["arguments"]) for i, c in got.calls.items()} == {
        i: (c["name"], c["arguments"]) for i, c in expected.calls.items()
    }
    check_ids(got.calls, expected.calls)
    assert got.finish_reason == expected.finish_reason
    # usage from the last chunk's usageMetadata; it sums to the recorded total
    assert got.usage == expected.usage
    assert got.usage is not None
    assert got.usage.total_tokens == chunks[-1]["usageMetadata"]["totalTokenCount"]
    assert got.roles == ["assistant"]


def test_pinned_streams() -> None:
    def read(interaction_id: str) -> Accumulated:
        item = find(interaction_id)
        return accumulate(parse(item.response_bytes, 7), UPSTREAM.stream_decoder())

    text = read("google/test_google_model_stream.yaml#0")
    assert text.content == "The capital of France is Paris.\n"
    # early chunks report a provisional prompt count (15); the last one says 13
    assert text.usage == Usage(prompt_tokens=13, completion_tokens=8)

    cut = read("stream_close/test_cancel_recorded_provider_stream[google].yaml#0")
    assert (cut.content, cut.finish_reason) == ("Paris", "stop")
    assert cut.usage == Usage(prompt_tokens=6, completion_tokens=36, reasoning_tokens=35)

    # the call arrives in one chunk, the finishReason in the next one, with an empty text
    call = read("google/test_google_streaming_tool_call_thought_signature.yaml#0")
    assert [c["name"] for c in call.calls.values()] == ["get_country"]
    assert (call.content, call.finish_reason) == ("", "tool_calls")

    thinking = read("google/test_google_model_thinking_part_iter.yaml#0")
    assert thinking.reasoning and thinking.content
    assert thinking.usage is not None and thinking.usage.reasoning_tokens == 787


def test_stream_cut_before_finish_is_not_finished() -> None:
    item = find("google/test_google_stream_usage_is_live_mid_stream.yaml#0")
    first_two = b"".join(item.response_bytes.split(b"\r\n\r\n")[i] + b"\r\n\r\n" for i in range(2))
    decoder = UPSTREAM.stream_decoder()
    got = accumulate(parse(first_two, 5), decoder)
    assert got.content and not decoder.finished  # HTTPProvider makes this STREAM_BROKEN
    assert got.usage is not None  # but the usage so far is known


def test_stream_errors_and_blocks() -> None:
    error = (
        '{"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}'
    )
    with pytest.raises(UpstreamError) as caught:
        list(UPSTREAM.stream_decoder().event(SSEEvent(error)))
    assert caught.value.error_class is ErrorClass.RATE_LIMITED
    with pytest.raises(UpstreamError) as caught:
        list(UPSTREAM.stream_decoder().event(SSEEvent("{not json")))
    assert caught.value.error_class is ErrorClass.STREAM_BROKEN
    # a prompt blocked before any candidate (vercel/ai#4235 shows this chunk)
    decoder = UPSTREAM.stream_decoder()
    block = '{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": '
    block += '{"promptTokenCount": 12, "totalTokenCount": 12}}'
    [delta] = decoder.event(SSEEvent(block))
    assert (delta.finish_reason, delta.usage) == ("content_filter", Usage(prompt_tokens=12))
    assert decoder.finished


# --- error bodies (none recorded: shapes from Google's documentation) ---------------------------
# https://ai.google.dev/gemini-api/docs/troubleshooting (status names per HTTP code),
# https://ai.google.dev/gemini-api/docs/rate-limits, google.rpc QuotaFailure / RetryInfo /
# ErrorInfo detail types (googleapis/google/rpc/error_details.proto).


def google_error(code: int, status: str, message: str, *details: dict[str, Any]) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return orjson.dumps({"error": error})


def quota_failure(quota_id: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                "quotaId": quota_id,
                "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
                "quotaValue": "20",
            }
        ],
    }


def retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. "
    "* Quota exceeded for metric: generativelanguage.googleapis.com/"
    "generate_content_free_tier_requests, limit: 20, model: gemini-2.5-flash\n"
    "Please retry in 38.2s."
)
KEY_INVALID = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "API_KEY_INVALID",
    "domain": "googleapis.com",
    "metadata": {"service": "generativelanguage.googleapis.com"},
}

DOCUMENTED_ERRORS: list[tuple[str, int, bytes, ErrorClass, float | None]] = [
    (
        "per-minute-429",
        429,
        google_error(
            429,
            "RESOURCE_EXHAUSTED",
            QUOTA_MESSAGE,
            quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
            retry_info("38s"),
        ),
        ErrorClass.RATE_LIMITED,
        38.0,
    ),
    (
        "per-day-429",
        429,
        google_error(
            429,
            "RESOURCE_EXHAUSTED",
            QUOTA_MESSAGE,
            quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
            retry_info("13.5s"),
        ),
        ErrorClass.QUOTA,
        13.5,
    ),
    (
        "bare-429",
        429,
        google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
        ErrorClass.RATE_LIMITED,
        None,
    ),
    (
        "prepaid-credits-429",
        429,
        google_error(429, "RESOURCE_EXHAUSTED", "Your prepayment credits are depleted."),
        ErrorClass.QUOTA,
        None,
    ),
    (
        "wrong-key-400",
        400,
        google_error(
            400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", KEY_INVALID
        ),
        ErrorClass.AUTH,
        None,
    ),
    (
        "permission-403",
        403,
        google_error(403, "PERMISSION_DENIED", "Your API key was reported as leaked."),
        ErrorClass.AUTH,
        None,
    ),
    (
        "unauthenticated-401",
        401,
        google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
        ErrorClass.AUTH,
        None,
    ),
    (
        "model-not-found-404",
        404,
        google_error(
            404,
            "NOT_FOUND",
            "models/gemini-9-flash is not found for API version v1beta, or is not supported "
            "for generateContent.",
        ),
        ErrorClass.AUTH,
        None,
    ),
    (
        "free-tier-region-400",
        400,
        google_error(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
        ErrorClass.AUTH,
        None,
    ),
    (
        "invalid-argument-400",
        400,
        google_error(400, "INVALID_ARGUMENT", 'Invalid JSON payload received. Unknown name "x"'),
        ErrorClass.CLIENT_ERROR,
        None,
    ),
    (
        "too-long-400",
        400,
        google_error(
            400,
            "INVALID_ARGUMENT",
            "The input token count (1048577) exceeds the maximum number of tokens allowed "
            "(1048576).",
        ),
        ErrorClass.CONTEXT_LENGTH,
        None,
    ),
    (
        "internal-500",
        500,
        google_error(500, "INTERNAL", "An internal error has occurred."),
        ErrorClass.SERVER_ERROR,
        None,
    ),
    (
        "unavailable-503",
        503,
        google_error(503, "UNAVAILABLE", "The service is currently unavailable."),
        ErrorClass.SERVER_ERROR,
        None,
    ),
    (
        "overloaded-503",
        503,
        google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
        ErrorClass.OVERLOADED,
        None,
    ),
    (
        "deadline-504",
        504,
        google_error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
        ErrorClass.TIMEOUT,
        None,
    ),
    (
        "array-wrapped-429",
        429,
        b"[" + google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted.") + b"]",
        ErrorClass.RATE_LIMITED,
        None,
    ),
    (
        "array-wrapped-404",
        404,
        b"[" + google_error(404, "NOT_FOUND", "models/x is not found") + b"]",
        ErrorClass.AUTH,
        None,
    ),
    ("html-502", 502, b"<html><body>Bad Gateway</body></html>", ErrorClass.SERVER_ERROR, None),
    ("empty-500", 500, b"", ErrorClass.SERVER_ERROR, None),
]


@pytest.mark.parametrize(
    ("status", "body", "error_class", "seconds"),
    [case[1:] for case in DOCUMENTED_ERRORS],
    ids=[case[0] for case in DOCUMENTED_ERRORS],
)
def test_decode_documented_error(
    status: int, body: bytes, error_class: ErrorClass, seconds: float | None
) -> None:
    error = UPSTREAM.decode_error(status, body, {})
    assert error.error_class is error_class
    assert error.status == status
    assert error.retry_after == seconds
    assert error.message
    parsed = orjson.loads(body) if body.startswith((b"{", b"[")) else None
    if parsed is not None:
        inner = (parsed[0] if isinstance(parsed, list) else parsed)["error"]
        assert (error.message, error.error_type) == (inner["message"], inner["status"])


def test_error_details_and_headers() -> None:
    error = UPSTREAM.decode_error(400, DOCUMENTED_ERRORS[4][2], {})
    assert error.code == "API_KEY_INVALID"
    # an HTTP Retry-After wins over the body's RetryInfo
    body = DOCUMENTED_ERRORS[0][2]
    assert UPSTREAM.decode_error(429, body, {"Retry-After": "5"}).retry_after == 5.0
    assert UPSTREAM.decode_error(503, b"", {"retry-after": "2"}).retry_after == 2.0
    assert "Bad Gateway" in UPSTREAM.decode_error(502, DOCUMENTED_ERRORS[-2][2], {}).message
    assert UPSTREAM.decode_error(500, b"", {}).message == "HTTP 500"


# Gemini's OpenAI-compatible endpoint (/v1beta/openai/) wraps the same error object in a JSON
# array; that endpoint is spoken by the OpenAI dialect, whose decode_error unwraps it.
OPENAI_ENDPOINT_ERRORS = [
    (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted.", ErrorClass.RATE_LIMITED),
    (400, "INVALID_ARGUMENT", "Invalid JSON payload received.", ErrorClass.CLIENT_ERROR),
    (403, "PERMISSION_DENIED", "Permission denied.", ErrorClass.AUTH),
    (404, "NOT_FOUND", "models/x is not found", ErrorClass.AUTH),
    (503, "UNAVAILABLE", "The service is currently unavailable.", ErrorClass.SERVER_ERROR),
]


@pytest.mark.parametrize(("status", "name", "message", "error_class"), OPENAI_ENDPOINT_ERRORS)
def test_openai_endpoint_array_errors(
    status: int, name: str, message: str, error_class: ErrorClass
) -> None:
    body = b"[" + google_error(status, name, message) + b"]"
    for decode in (openai_decode_error, UPSTREAM.decode_error):
        error = decode(status, body, {})
        assert (error.error_class, error.status, error.message) == (error_class, status, message)


# --- request encoding ---------------------------------------------------------------------------

# Fields of recorded requests the internal Request cannot express, and why they are skipped.
SKIPPED = {
    "safetySettings": "Google-specific safety thresholds: no OpenAI field",
    "labels": "Vertex AI billing labels: no OpenAI field",
    "modelArmorConfig": "Vertex AI Model Armor templates: no OpenAI field",
    "generationConfig.responseModalities": "['TEXT'] is the default for text models",
    "generationConfig.thinkingConfig": "thinking budgets/levels: no portable OpenAI field",
    "generationConfig.logprobs": "logprobs are not passed on by turnout",
    "generationConfig.responseLogprobs": "logprobs are not passed on by turnout",
    "tools[].googleSearch": "Google's builtin tool: no OpenAI function-tool equivalent",
    "tools[].urlContext": "Google's builtin tool: no OpenAI function-tool equivalent",
    "tools[].codeExecution": "Google's builtin tool: no OpenAI function-tool equivalent",
    "parts[].thoughtSignature (text parts)": "the OpenAI shape has no place for it; Gemini "
    "validates only function-call signatures",
}
# Deliberate differences between what turnout sends and what pydantic-ai sent.
DIFFERENCES = {
    "systemInstruction.role": "a role in systemInstruction is ignored: not sent",
    "generationConfig {}": "an empty generationConfig is not sent",
    "responseSchema": "a schema always goes as responseJsonSchema (JSON Schema, not OpenAPI)",
    "parameters / parameters_json_schema": "functions always declare parametersJsonSchema",
    "tools as one object, function_declarations": "always [{'functionDeclarations': [...]}]",
    "allowedFunctionNames = every function": "that is tool_choice 'required': plain ANY",
    "mode VALIDATED": "tool_choice 'auto' is sent as AUTO",
    "thought parts": "consecutive thought parts come back as one (one reasoning string)",
    "call ids": "a call recorded without id gets the id the client answered it with",
    "thoughtSignature": "a model turn's first call without one gets SKIP_SIGNATURE",
}


@dataclass
class Translation:
    request: Request
    expected: dict[str, Any]
    differences: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)


def openapi_to_json_schema(schema: Any) -> Any:
    """pydantic-ai's OpenAPI-subset schemas (`type: OBJECT`, `any_of`, `property_ordering`)
    back to the JSON Schema a client would have written."""
    if isinstance(schema, list):
        return [openapi_to_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "property_ordering":
            continue
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key == "properties":
            out[key] = {name: openapi_to_json_schema(sub) for name, sub in value.items()}
        else:
            out["anyOf" if key == "any_of" else key] = openapi_to_json_schema(value)
    return out


def _with_call_ids(contents: list[dict[str, Any]], notes: set[str]) -> list[dict[str, Any]]:
    """A copy of the recorded contents in which every function call and response has an id
    (answers without ids are matched to calls of the same name, in order)."""
    contents = copy.deepcopy(contents)
    pending: dict[str, list[str]] = {}
    count = 0
    for content in contents:
        for part in content["parts"]:
            if "functionCall" in part:
                call = part["functionCall"]
                if not call.get("id"):
                    call["id"] = f"call_{count}"
                    notes.add("call ids")
                count += 1
                pending.setdefault(call["name"], []).append(call["id"])
            if "functionResponse" in part:
                answer = part["functionResponse"]
                if not answer.get("id"):
                    answer["id"] = pending[answer["name"]][0]
                    notes.add("call ids")
                pending[answer["name"]].remove(answer["id"])
    return contents


def _message_content(texts: list[str]) -> str | list[dict[str, str]]:
    return texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts]


def _messages(
    contents: list[dict[str, Any]], system: dict[str, Any] | None
) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": part["text"]} for part in (system or {}).get("parts", [])
    ]
    for content in contents:
        parts = content["parts"]
        if content["role"] == "user":
            texts = [part["text"] for part in parts if "text" in part]
            if texts:
                messages.append({"role": "user", "content": _message_content(texts)})
            for part in parts:
                if "functionResponse" in part:
                    answer = part["functionResponse"]
                    # no name: the encoder must find it from the call
                    messages.append(
                        {
                            "role": "tool",
                            "tool_call_id": answer["id"],
                            "content": orjson.dumps(answer["response"]).decode(),
                        }
                    )
            continue
        message: dict[str, Any] = {"role": "assistant", "content": None}
        thoughts = [part["text"] for part in parts if part.get("thought")]
        texts = [part["text"] for part in parts if "text" in part and not part.get("thought")]
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        if texts:
            message["content"] = _message_content(texts)
        calls = []
        for part in parts:
            if "functionCall" not in part:
                continue
            call = part["functionCall"]
            tool_call: dict[str, Any] = {
                "id": call["id"],
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": orjson.dumps(call["args"]).decode(),
                },
            }
            signature = part.get("thoughtSignature")
            if signature and signature != SKIP_SIGNATURE:
                # where Gemini's OpenAI endpoint hands a signature to its clients
                tool_call["extra_content"] = {"google": {"thought_signature": signature}}
            calls.append(tool_call)
        if calls:
            message["tool_calls"] = calls
        messages.append(message)
    return messages


def _expected_contents(contents: list[dict[str, Any]], t: Translation) -> list[dict[str, Any]]:
    out = []
    for content in contents:
        parts: list[dict[str, Any]] = []
        first_call = True
        for part in content["parts"]:
            part = dict(part)
            if "functionCall" in part:
                if first_call and "thoughtSignature" not in part:
                    part["thoughtSignature"] = SKIP_SIGNATURE
                    t.differences.add("thoughtSignature")
                first_call = False
            elif "thoughtSignature" in part:
                del part["thoughtSignature"]
                t.skipped.add("parts[].thoughtSignature (text parts)")
            if part.get("thought") and parts and parts[-1].get("thought"):
                parts[-1] = {"text": parts[-1]["text"] + part["text"], "thought": True}
                t.differences.add("thought parts")
                continue
            parts.append(part)
        out.append({"role": content["role"], "parts": parts})
    return out


def _tools(recorded: Any, t: Translation) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(OpenAI tools, expected functionDeclarations)."""
    if isinstance(recorded, dict):
        recorded = [recorded]
        t.differences.add("tools as one object, function_declarations")
    tools, declarations = [], []
    for tool in recorded or []:
        for builtin in ("googleSearch", "urlContext", "codeExecution"):
            if builtin in tool:
                t.skipped.add(f"tools[].{builtin}")
        functions = tool.get("functionDeclarations") or tool.get("function_declarations") or []
        if "function_declarations" in tool:
            t.differences.add("tools as one object, function_declarations")
        for function in functions:
            if "parametersJsonSchema" in function:
                schema = function["parametersJsonSchema"]
            elif "parameters_json_schema" in function:
                schema = function["parameters_json_schema"]
                t.differences.add("parameters / parameters_json_schema")
            else:
                schema = openapi_to_json_schema(function["parameters"])
                t.differences.add("parameters / parameters_json_schema")
            openai_function = {"name": function["name"], "parameters": schema}
            declaration = {"name": function["name"], "parametersJsonSchema": schema}
            if "description" in function:
                openai_function["description"] = declaration["description"] = function[
                    "description"
                ]
            tools.append({"type": "function", "function": openai_function})
            declarations.append(declaration)
    return tools, declarations


def _tool_choice(config: dict[str, Any], names: list[str], t: Translation) -> tuple[Any, Any]:
    """(tool_choice, expected functionCallingConfig)."""
    mode = config.get("mode")
    allowed = config.get("allowedFunctionNames")
    if mode == "AUTO":
        return "auto", {"mode": "AUTO"}
    if mode == "VALIDATED":
        t.differences.add("mode VALIDATED")
        return "auto", {"mode": "AUTO"}
    if mode == "NONE":
        return "none", {"mode": "NONE"}
    assert mode == "ANY", config
    if allowed and sorted(allowed) != sorted(names):
        [name] = allowed
        return {"type": "function", "function": {"name": name}}, config
    if allowed:
        t.differences.add("allowedFunctionNames = every function")
    return "required", {"mode": "ANY"}


GENERATION_SKIPPED = ("responseModalities", "thinkingConfig", "logprobs", "responseLogprobs")
TOP_LEVEL = {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig"}


def translate(recorded: dict[str, Any]) -> Translation:
    """The internal Request that expresses a recorded body's intent, and the body turnout
    should send for it."""
    t = Translation(Request(model="gemini", messages=[]), {})
    for key in set(recorded) - TOP_LEVEL:
        assert key in SKIPPED, f"unreviewed request field {key}"
        t.skipped.add(key)
    contents = _with_call_ids(recorded["contents"], t.differences)
    request = t.request
    request.messages = _messages(contents, recorded.get("systemInstruction"))
    expected: dict[str, Any] = {"contents": _expected_contents(contents, t)}
    if "systemInstruction" in recorded:
        expected["systemInstruction"] = {"parts": recorded["systemInstruction"]["parts"]}
        if "role" in recorded["systemInstruction"]:
            t.differences.add("systemInstruction.role")

    config = dict(recorded.get("generationConfig") or {})
    for key in GENERATION_SKIPPED:
        if key in config:
            t.skipped.add(f"generationConfig.{key}")
            del config[key]
    request.max_tokens = config.get("maxOutputTokens")
    request.temperature = config.get("temperature")
    request.top_p = config.get("topP")
    request.stop = config.get("stopSequences")
    if "topK" in config:
        request.extra["top_k"] = config["topK"]
    if "responseSchema" in config:
        config["responseJsonSchema"] = openapi_to_json_schema(config.pop("responseSchema"))
        t.differences.add("responseSchema")
    if "responseJsonSchema" in config:
        schema = config["responseJsonSchema"]
        request.response_format = {
            "type": "json_schema",
            "json_schema": {"name": schema.get("title", "output"), "schema": schema},
        }
    elif config.get("responseMimeType") == "application/json":
        request.response_format = {"type": "json_object"}
    assert set(config) <= {"maxOutputTokens", "temperature", "topP", "stopSequences", "topK"} | {
        "responseMimeType",
        "responseJsonSchema",
    }, config
    if config:
        expected["generationConfig"] = config
    elif "generationConfig" in recorded:
        t.differences.add("generationConfig {}")

    tools, declarations = _tools(recorded.get("tools"), t)
    request.tools = tools or None
    if declarations:
        expected["tools"] = [{"functionDeclarations": declarations}]
        if "toolConfig" in recorded:
            names = [d["name"] for d in declarations]
            calling = recorded["toolConfig"]["functionCallingConfig"]
            request.tool_choice, expected_calling = _tool_choice(calling, names, t)
            expected["toolConfig"] = {"functionCallingConfig": expected_calling}
    t.expected = expected
    return t


@pytest.mark.parametrize("item", REQUESTS, ids=ids)
def test_encode_request(item: Interaction) -> None:
    t = translate(item.request_body)
    model = item.path.rsplit("/", 1)[1].split(":")[0]
    body = UPSTREAM.encode_request(t.request, model, item.is_stream)
    assert body == t.expected
    assert orjson.loads(orjson.dumps(body)) == t.expected  # the same on the wire
    assert t.differences <= set(DIFFERENCES) and t.skipped <= set(SKIPPED)


def test_differences_and_skips_are_exercised() -> None:
    """Each listed difference and skipped field is met by at least one recorded request, and
    many requests encode with no deliberate difference at all."""
    seen_differences: set[str] = set()
    seen_skipped: set[str] = set()
    exact = 0
    for item in REQUESTS:
        t = translate(item.request_body)
        seen_differences |= t.differences
        seen_skipped |= t.skipped
        exact += not t.differences
    assert seen_differences == set(DIFFERENCES)
    assert seen_skipped == set(SKIPPED)
    assert exact >= 15


def test_pinned_request_fields() -> None:
    def encoded(interaction_id: str) -> dict[str, Any]:
        t = translate(find(interaction_id).request_body)
        return UPSTREAM.encode_request(t.request, "gemini-2.5-flash", False)

    body = encoded("google/test_google_dict_with_additional_properties_native_output.yaml#0")
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"]["properties"]["metadata"]["additionalProperties"] == {
        "type": "string"
    }
    body = encoded("google/test_google_model_max_tokens.yaml#0")
    assert body["generationConfig"] == {"maxOutputTokens": 5}
    assert body["systemInstruction"] == {"parts": [{"text": "You are a helpful chatbot."}]}
    assert encoded("google/test_google_model_top_p.yaml#0")["generationConfig"] == {"topP": 0.5}

    body = encoded("google/test_google_instructions_only_with_tool_calls.yaml#1")
    model, answers = body["contents"][1], body["contents"][2]
    # parallel answers travel together, named after the calls they answer
    assert [p["functionResponse"]["name"] for p in answers["parts"]] == ["generate_topic"] * 3
    # the real signature is kept on the first call; the others need none
    assert model["parts"][0]["thoughtSignature"].startswith("Es8FCswF")
    assert [("thoughtSignature" in p) for p in model["parts"]] == [True, False, False]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    body = encoded("google/test_thinking_with_tool_calls_from_other_model.yaml#2")
    # a call made by another provider: Google's documented skip value, as recorded
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == SKIP_SIGNATURE


def _request(messages: list[dict[str, Any]], **fields: Any) -> Request:
    return Request(model="m", messages=messages, **fields)


def test_encode_openai_shapes() -> None:
    """What OpenAI clients send that no Gemini recording shows."""
    request = _request(
        [
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg?s=1"}},
                ],
            },
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}},
                    {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{"}},
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "plain text result"},
            {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "[1]"}]},
            {"role": "user", "content": "thanks"},
        ],
        stop=["END"],
        response_format={"type": "json_object"},
        extra={"seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.1, "logit_bias": {}},
        tools=[
            {"type": "function", "function": {"name": "f"}},
            {"type": "function", "function": {"name": "g", "parameters": {"type": "object"}}},
            {"type": "web_search"},
        ],
        tool_choice={"type": "function", "function": {"name": "g"}},
    )
    body = UPSTREAM.encode_request(request, "gemini-2.5-flash", True)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    user, model, answers = body["contents"]
    assert user["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/cat.jpg?s=1"}},
    ]
    # the empty content beside the calls is dropped; unparseable arguments become {}
    assert model == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"name": "f", "args": {}, "id": "a"},
                "thoughtSignature": SKIP_SIGNATURE,
            },
            {"functionCall": {"name": "g", "args": {}, "id": "b"}},
        ],
    }
    # two tool answers and the user's next words: one user turn
    assert answers["role"] == "user"
    assert answers["parts"] == [
        {"functionResponse": {"name": "f", "response": {"result": "plain text result"}, "id": "a"}},
        {"functionResponse": {"name": "g", "response": {"result": "[1]"}, "id": "b"}},
        {"text": "thanks"},
    ]
    assert body["generationConfig"] == {
        "stopSequences": ["END"],
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": 0.1,
        "responseMimeType": "application/json",
    }
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {"name": "f"},
                {"name": "g", "parametersJsonSchema": {"type": "object"}},
            ]
        }
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["g"]}
    }


@pytest.mark.parametrize(
    ("tool_choice", "calling"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (None, None),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "f"}}],
                },
            },
            {"mode": "ANY", "allowedFunctionNames": ["f"]},
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "f"}}],
                },
            },
            {"mode": "VALIDATED", "allowedFunctionNames": ["f"]},
        ),
    ],
)
def test_tool_choice(tool_choice: Any, calling: dict[str, Any] | None) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    request = _request([{"role": "user", "content": "hi"}], tools=tools, tool_choice=tool_choice)
    body = UPSTREAM.encode_request(request, "m", False)
    assert body.get("toolConfig") == ({"functionCallingConfig": calling} if calling else None)
    # no function tools at all: no tools and no toolConfig
    request = _request([{"role": "user", "content": "hi"}], tool_choice=tool_choice)
    assert set(UPSTREAM.encode_request(request, "m", False)) == {"contents"}


def test_kept_signature_and_reasoning_history() -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"x": 1}'},
        "extra_content": {"google": {"thought_signature": "c2ln"}},
    }
    request = _request(
        [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "hmm",
                "tool_calls": [call],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"ok": true}'},
        ]
    )
    model, answer = UPSTREAM.encode_request(request, "m", False)["contents"][1:]
    assert model["parts"] == [
        {"text": "hmm", "thought": True},
        {"functionCall": {"name": "f", "args": {"x": 1}, "id": "c1"}, "thoughtSignature": "c2ln"},
    ]
    assert answer["parts"] == [
        {"functionResponse": {"name": "f", "response": {"ok": True}, "id": "c1"}}
    ]


# --- end to end: a real HTTPProvider replaying recorded answers -----------------------------------


async def test_http_provider_replays_recorded_traffic(monkeypatch: pytest.MonkeyPatch) -> None:
    """A recorded stream (which ends with the body, no [DONE]) and a recorded answer, served
    by a tiny app on 127.0.0.1 that checks what HTTPProvider sends."""
    stream = find("google/test_google_model_stream.yaml#0")
    answer = find("google/test_google_model.yaml#0")
    seen: list[tuple[str, str | None, dict[str, Any]]] = []

    async def generate(http: web.Request) -> web.StreamResponse:
        seen.append((http.path_qs, http.headers.get("x-goog-api-key"), await http.json()))
        if http.path.endswith(":streamGenerateContent"):
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(http)
            raw = stream.response_bytes
            for i in range(0, len(raw), 50):  # in odd pieces
                await response.write(raw[i : i + 50])
            await response.write_eof()
            return response
        return web.Response(body=answer.response_bytes, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1beta/models/{call}", generate)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("TURNOUT_TEST_GEMINI_KEY", "gemini-test-key")
    config = ProviderConfig(
        kind="gemini",
        base_url=f"http://127.0.0.1:{port}/v1beta",
        api_key="${TURNOUT_TEST_GEMINI_KEY}",
    )
    provider = HTTPProvider("gemini", config, UPSTREAM)
    await provider.start()
    try:
        hello = _request([{"role": "user", "content": "Hello!"}])
        response = await provider.complete(hello, Call("gemini-2.5-flash", Timeouts()))
        assert response.content == "Hello! How can I help you today?"
        deltas = [
            delta
            async for delta in provider.stream(hello, Call("gemini-2.0-flash-exp", Timeouts()))
        ]
    finally:
        await provider.close()
        await runner.cleanup()
    assert "".join(d.content or "" for d in deltas) == "The capital of France is Paris.\n"
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage == Usage(prompt_tokens=13, completion_tokens=8)
    body = {"contents": [{"role": "user", "parts": [{"text": "Hello!"}]}]}
    assert seen == [
        ("/v1beta/models/gemini-2.5-flash:generateContent", "gemini-test-key", body),
        (
            "/v1beta/models/gemini-2.0-flash-exp:streamGenerateContent?alt=sse",
            "gemini-test-key",
            body,
        ),
    ]
