"""Property-based fuzzing (hypothesis) of everything that reads bytes someone else wrote.

Ingress, end to end: one real `turnout serve` process, driven over raw HTTP with requests
that start valid and are broken one field at a time, garbage bodies and hostile headers, on
/v1/chat/completions and /v1/messages. Never a 5xx (the sim upstream is healthy, so nothing
is anyone's fault but the client's), always the dialect's error shape, `/health` still
answers after every example.

Upstream decoders, in process: every provider dialect's decode_response, stream decoder and
decode_error, and the SSE parser, on mutated recordings of real provider traffic. They
return a value of the internal model's types or raise UpstreamError: nothing else.

Size and seed: see tests/fuzz_strategies.py (TURNOUT_FUZZ_EXAMPLES, TURNOUT_FUZZ_RANDOM).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.conftest import GatewayProcess, sim_config, start_gateway
from tests.fuzz_strategies import (
    CASES,
    STATUSES,
    anthropic_requests,
    finite_seconds,
    fuzz_settings,
    fuzz_timeout,
    garbage_bodies,
    hostile_headers,
    mutated,
    odd_text,
    openai_requests,
    optional,
    to_bytes,
    truncated,
)
from tests.test_cloudflare_dialect import (
    JSON_MODE_ANSWER,
    LEGACY_CALLS,
    OPENAI_CALLS,
    REST_ANSWER,
    STREAM,
    USAGE,
)
from tests.upstreams import SIM_ANTHROPIC_ENV, both_dialects, shared_sim
from tests.vectors import OPENAI_COMPATIBLE, chat_completions, load, load_folder, require
from turnout.dialects.anthropic.upstream import AnthropicUpstream
from turnout.dialects.cloudflare import CloudflareUpstream
from turnout.dialects.gemini.upstream import GeminiUpstream
from turnout.dialects.openai.upstream import OpenAIUpstream
from turnout.dialects.sse import SSEEvent, SSEParser
from turnout.model import (
    Delta,
    ErrorClass,
    Response,
    ToolCall,
    ToolCallDelta,
    UpstreamError,
    Usage,
)

# examples per property by default: the whole file in ~90 s on two cores
DECODER_EXAMPLES = 150
INGRESS_EXAMPLES = 120


# --- what the decoders may return ----------------------------------------------------------------


def check_usage(usage: Usage) -> None:
    assert isinstance(usage, Usage)
    for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"):
        value = getattr(usage, name)
        assert type(value) is int and value >= 0, (name, value)
    assert usage.cost is None or (type(usage.cost) is float and finite_seconds(usage.cost))


def check_response(response: Response) -> None:
    assert isinstance(response, Response)
    assert isinstance(response.id, str) and isinstance(response.model, str)
    assert optional(str)(response.content) and optional(str)(response.reasoning)
    assert isinstance(response.finish_reason, str)
    # an egress encoder must be able to write it back (orjson: 64-bit integers)
    assert type(response.created) is int and 0 <= response.created < 2**63
    check_usage(response.usage)
    for call in response.tool_calls:
        assert isinstance(call, ToolCall)
        assert all(isinstance(v, str) for v in (call.id, call.name, call.arguments)), call


def check_delta(delta: Delta) -> None:
    assert isinstance(delta, Delta)
    assert optional(str)(delta.content) and optional(str)(delta.reasoning)
    assert optional(str)(delta.finish_reason) and optional(str)(delta.role)
    if delta.usage is not None:
        check_usage(delta.usage)
    for call in delta.tool_calls or ():
        assert isinstance(call, ToolCallDelta)
        assert type(call.index) is int and call.index >= 0, call
        assert optional(str)(call.id) and optional(str)(call.name), call
        assert isinstance(call.arguments, str), call


def check_error(error: UpstreamError) -> None:
    assert isinstance(error, UpstreamError)
    assert isinstance(error.error_class, ErrorClass)
    assert isinstance(error.message, str)
    assert optional(int)(error.status), error.status
    assert finite_seconds(error.retry_after), error.retry_after
    for name in ("error_type", "code", "param"):
        assert optional(str)(getattr(error, name)), (name, getattr(error, name))


# --- seeds: real recorded traffic, per wire format ----------------------------------------------

GOOGLE_ERRORS = (
    {"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}},
    {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota. limit: 0, model: gemini-2.5-pro",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                            "quotaValue": "50",
                        }
                    ],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38s"},
            ],
        }
    },
    {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
            ],
        }
    },
    [{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}],
)
CLOUDFLARE_ERRORS = (
    {"result": None, "success": False, "errors": [{"code": 3040, "message": "Capacity"}]},
    {"success": False, "errors": [{"code": 5007, "message": "No such model"}], "messages": []},
    {"error": {"code": 3036, "message": "daily free allocation"}},
    {"errors": [{"code": 10000, "message": "Authentication error"}], "success": False},
)


def _json_bodies(items: list[Any], *, ok: bool) -> list[Any]:
    return [
        item.response_json
        for item in items
        if item.response_json is not None and (item.status == 200) == ok
    ]


def _streams(items: list[Any]) -> list[str]:
    return [item.response_text for item in items if item.is_stream and item.response_text]


def _gemini(items: list[Any]) -> list[Any]:
    return [
        item for item in items if "generateContent" in item.path or "GenerateContent" in item.path
    ]


# the properties start from recorded traffic: without it the module is skipped, saying why
require(*OPENAI_COMPATIBLE, "anthropic", "google", "stream_close")
OPENAI_ITEMS = chat_completions()
ANTHROPIC_ITEMS = [item for item in load_folder("anthropic") if item.path.endswith("/v1/messages")]
GEMINI_ITEMS = _gemini(load(["google", "openai", "anthropic", "stream_close"]))


def _cloudflare_stream() -> list[str]:
    envelope = {"result": {"response": "hi", "tool_calls": OPENAI_CALLS}, "success": True}
    chunks = [
        {"choices": [{"delta": {"content": "a", "tool_calls": [{**OPENAI_CALLS[0], "index": 0}]}}]},
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}], "usage": USAGE},
    ]
    openai_shaped = "".join(f"data: {orjson.dumps(c).decode()}\n\n" for c in chunks)
    return [
        STREAM,
        openai_shaped + "data: [DONE]\n\n",
        f"data: {orjson.dumps(envelope).decode()}\n\n",
    ]


class Seeds:
    """A dialect under test and the recorded bodies its properties start from."""

    def __init__(
        self, name: str, dialect: Any, ok: list[Any], errors: list[Any], streams: list[str]
    ):
        self.name, self.dialect = name, dialect
        self.ok, self.errors, self.streams = ok, errors, streams
        # every body is also tried as what it is not: an upstream may send anything anywhere
        self.any_body = ok + errors

    def __repr__(self) -> str:
        return self.name


DIALECTS = [
    Seeds(
        "openai",
        OpenAIUpstream(),
        _json_bodies(OPENAI_ITEMS, ok=True),
        _json_bodies(OPENAI_ITEMS, ok=False)
        + [{"error": "plain"}, [{"error": {"status": "NOT_FOUND"}}]],
        _streams(OPENAI_ITEMS + list(load_folder("stream_close"))),
    ),
    Seeds(
        "anthropic",
        AnthropicUpstream(),
        _json_bodies(ANTHROPIC_ITEMS, ok=True),
        _json_bodies(ANTHROPIC_ITEMS, ok=False)
        + [{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}],
        _streams(ANTHROPIC_ITEMS),
    ),
    Seeds(
        "anthropic-json-tool",
        AnthropicUpstream(structured_output=False),
        _json_bodies(ANTHROPIC_ITEMS, ok=True),
        [{"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}],
        _streams(ANTHROPIC_ITEMS),
    ),
    Seeds(
        "gemini",
        GeminiUpstream(),
        _json_bodies(GEMINI_ITEMS, ok=True),
        list(GOOGLE_ERRORS),
        _streams(GEMINI_ITEMS),
    ),
    Seeds(
        "cloudflare",
        CloudflareUpstream("acc123"),
        [
            REST_ANSWER,
            {"result": JSON_MODE_ANSWER, "success": True},
            {"result": {"response": None, "tool_calls": LEGACY_CALLS, "usage": USAGE}},
            {"result": {"choices": [{"message": {"content": "x", "tool_calls": OPENAI_CALLS}}]}},
        ],
        list(CLOUDFLARE_ERRORS),
        _cloudflare_stream(),
    ),
]


def test_every_dialect_has_seeds() -> None:
    for seeds in DIALECTS:
        assert seeds.ok and seeds.errors and seeds.streams, seeds.name


def _body(data: st.DataObject, bodies: list[Any]) -> bytes:
    """A recorded body, mutated and serialised; sometimes truncated, sometimes garbage."""
    if data.draw(st.integers(0, 9)) == 0:
        return data.draw(garbage_bodies())
    value = data.draw(mutated(st.sampled_from(bodies)))
    return truncated(data.draw, to_bytes(value, ascii_only=data.draw(st.booleans())))


# --- properties: upstream decoders ----------------------------------------------------------------

DECODE = fuzz_settings(DECODER_EXAMPLES)


@pytest.mark.parametrize("seeds", DIALECTS, ids=repr)
@DECODE
@given(data=st.data())
def test_decode_response_raises_only_upstream_errors(seeds: Seeds, data: st.DataObject) -> None:
    CASES[f"{seeds.name} decode_response"] += 1
    body = _body(data, seeds.ok if data.draw(st.integers(0, 3)) else seeds.any_body)
    try:
        response = seeds.dialect.decode_response(body)
    except UpstreamError as error:
        check_error(error)
    else:
        check_response(response)


RETRY_AFTER_VALUES = st.one_of(
    st.sampled_from(["1", "0.5", "-3", "1e400", "inf", "nan", "Wed, 21 Oct 2015 07:28:00 GMT", ""]),
    st.sampled_from(["Mon, 01 Jan 99999 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "9" * 400]),
    odd_text(),
)


@pytest.mark.parametrize("seeds", DIALECTS, ids=repr)
@DECODE
@given(
    data=st.data(),
    status=st.one_of(
        st.sampled_from([400, 401, 402, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 529]),
        st.integers(100, 999),
    ),
    headers=st.dictionaries(
        st.sampled_from(["retry-after", "Retry-After", "retry-after-ms", "x-ratelimit-reset"]),
        RETRY_AFTER_VALUES,
        max_size=3,
    ),
)
def test_decode_error_returns_a_classified_error(
    seeds: Seeds, data: st.DataObject, status: int, headers: dict[str, str]
) -> None:
    CASES[f"{seeds.name} decode_error"] += 1
    body = _body(data, seeds.errors if data.draw(st.integers(0, 3)) else seeds.any_body)
    error = seeds.dialect.decode_error(status, body, headers)
    check_error(error)


def _events(text: str) -> list[SSEEvent]:
    parser = SSEParser()
    return parser.feed(text.encode("utf-8", "surrogatepass")) + parser.flush()


@st.composite
def event_sequences(draw: st.DrawFn, streams: list[str]) -> list[SSEEvent]:
    """A recorded stream's events with a few of them broken, dropped, repeated or moved."""
    events = _events(draw(st.sampled_from(streams)))
    for _ in range(draw(st.integers(0, 4))):
        if not events:
            break
        index = draw(st.integers(0, len(events) - 1))
        operation = draw(st.sampled_from(["json", "json", "garbage", "drop", "repeat", "move"]))
        event = events[index]
        if operation == "json":
            try:
                parsed = json.loads(event.data)
            except (ValueError, RecursionError):  # not JSON, or deeper than json can read
                parsed = event.data
            text = to_bytes(draw(mutated(st.just(parsed)))).decode("utf-8", "surrogateescape")
            events[index] = SSEEvent(text, event.event)
        elif operation == "garbage":
            events[index] = SSEEvent(draw(odd_text()), draw(st.one_of(st.none(), odd_text())))
        elif operation == "drop":
            del events[index]
        elif operation == "repeat":
            events.insert(index, SSEEvent(event.data, event.event))
        else:
            events.insert(draw(st.integers(0, len(events) - 1)), events.pop(index))
    return events


@pytest.mark.parametrize("seeds", DIALECTS, ids=repr)
@DECODE
@given(data=st.data())
def test_stream_decoder_raises_only_upstream_errors(seeds: Seeds, data: st.DataObject) -> None:
    CASES[f"{seeds.name} stream"] += 1
    decoder = seeds.dialect.stream_decoder()
    # as providers/http.py reads a stream: until the decoder says done, or an error
    try:
        for event in data.draw(event_sequences(seeds.streams)):
            for delta in decoder.event(event):
                check_delta(delta)
            if decoder.done:
                break
    except UpstreamError as error:
        check_error(error)


# --- properties: the SSE parser --------------------------------------------------------------------


def _parse(chunks: list[bytes]) -> list[tuple[str, str | None]]:
    parser = SSEParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)] + parser.flush()
    for event in events:
        assert isinstance(event.data, str) and optional(str)(event.event)
    return [(event.data, event.event) for event in events]


def _chunked(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(raw) + 1) for cut in cuts})
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]


SSE_LINES = st.one_of(
    st.builds(lambda v: b"data: " + v, st.binary(max_size=12)),
    st.builds(lambda v: b"event: " + v, st.sampled_from([b"message_start", b"error", b"\xff"])),
    st.sampled_from(
        [b"", b": keep-alive", b"data:", b"data", b"id: 1", b"retry: 10", b"\xef\xbb\xbf"]
    ),
    st.sampled_from(["data: é💥".encode(), b"data: \xed\xa0\x80", b"data: [DONE]"]),
)


def sse_streams() -> st.SearchStrategy[bytes]:
    lines = st.lists(st.tuples(SSE_LINES, st.sampled_from([b"\n", b"\r\n"])), max_size=12)
    generated = lines.map(lambda pairs: b"".join(line + end for line, end in pairs))
    recorded = st.sampled_from([text.encode() for seeds in DIALECTS for text in seeds.streams])
    return st.one_of(generated, recorded, st.binary(max_size=200))


SSE = fuzz_settings(DECODER_EXAMPLES * 2)


@SSE
@given(raw=sse_streams(), cuts=st.lists(st.integers(0, 10**6), max_size=20))
@example(raw=b"data: \xff\xfe\n\n", cuts=[]).via("invalid UTF-8 in an event")
@example(raw="data: é\n\n".encode(), cuts=[7]).via("a character split across chunks")
def test_sse_parser_events_do_not_depend_on_chunking(raw: bytes, cuts: list[int]) -> None:
    CASES["sse parser"] += 1
    whole = _parse([raw])
    assert _parse(_chunked(raw, cuts)) == whole
    assert _parse([bytes([byte]) for byte in raw]) == whole


# --- properties: ingress, end to end --------------------------------------------------------------

# `chat` is a route on the in-process sim; the forced models reach the sim's OpenAI and
# Anthropic endpoints through the real upstream dialects, so translation is fuzzed too
FORCED = ("fast", "compat-m", "claude-m")
MODELS = ("chat", *FORCED)
QUICK = {"reply": "ok", "ttft": 0, "tokens_per_second": 100_000}


def _ingress_config(sim_url: str) -> dict[str, Any]:
    config = sim_config({"fast": QUICK}, {"chat": {"targets": ["fast"]}})
    pair = both_dialects(sim_url, openai_model="compat-m")
    config["providers"].update(pair["providers"])
    config["models"].update(pair["models"])
    return config


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with shared_sim({"compat-m": QUICK, "claude-m": QUICK}) as sim:
        tmp_path: Path = tmp_path_factory.mktemp("fuzz")
        process = start_gateway(_ingress_config(sim.base_url), tmp_path, SIM_ANTHROPIC_ENV)
        try:
            yield process
        finally:
            process.stop()


class RawClient:
    """One kept-alive connection that sends whatever bytes it is given, reopened when the
    gateway closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, bytes] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            return self._send(method, path, body, headers or {})
        except (http.client.RemoteDisconnected, ConnectionError):
            # a closed keep-alive connection: one retry on a fresh one tells it from a crash
            self.connection.close()
            return self._send(method, path, body, headers or {})

    def _send(
        self, method: str, path: str, body: bytes | None, headers: dict[str, bytes]
    ) -> tuple[int, dict[str, str], bytes]:
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        raw = response.read()
        if response.will_close:
            self.connection.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, raw


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> Iterator[RawClient]:
    raw = RawClient(gateway.port)
    yield raw
    raw.connection.close()


def _sse(body: bytes) -> list[tuple[str | None, Any]]:
    parser = SSEParser()
    events = parser.feed(body) + parser.flush()
    return [(e.event, e.data if e.data == "[DONE]" else json.loads(e.data)) for e in events]


def check_openai_answer(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500, (status, body[:500])
    if status >= 400:
        error = json.loads(body).get("error")
        assert isinstance(error, dict), body[:500]
        assert isinstance(error["message"], str) and isinstance(error["type"], str), error
        assert "param" in error and "code" in error, error
        return
    assert status == 200, (status, body[:500])
    if headers.get("content-type", "").startswith("text/event-stream"):
        events = _sse(body)
        assert events and events[-1] == (None, "[DONE]"), events[-3:]
        for _, chunk in events[:-1]:
            assert "error" not in chunk and chunk["object"] == "chat.completion.chunk", chunk
        return
    answer = json.loads(body)
    assert answer["object"] == "chat.completion", answer
    assert answer["choices"][0]["message"]["role"] == "assistant", answer


def check_anthropic_answer(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500, (status, body[:500])
    if status >= 400:
        answer = json.loads(body)
        assert answer.get("type") == "error", answer
        assert isinstance(answer["error"]["type"], str), answer
        assert isinstance(answer["error"]["message"], str), answer
        return
    assert status == 200, (status, body[:500])
    if headers.get("content-type", "").startswith("text/event-stream"):
        events = _sse(body)
        assert events and events[0][0] == "message_start" and events[-1][0] == "message_stop"
        for name, data in events:
            assert name != "error" and data["type"] == name, (name, data)
        return
    answer = json.loads(body)
    assert answer["type"] == "message" and answer["role"] == "assistant", answer
    assert isinstance(answer["content"], list), answer


CHECKS = {"/v1/chat/completions": check_openai_answer, "/v1/messages": check_anthropic_answer}
JSON_HEADERS = {"content-type": b"application/json"}


def exchange(
    client: RawClient,
    path: str,
    body: bytes,
    headers: dict[str, bytes] | None = None,
    *,
    case: str,
) -> None:
    """One request: the answer is in the dialect's shape and the process still serves."""
    CASES[case] += 1
    status, answer_headers, answer = client.send(
        "POST", path, body, {**JSON_HEADERS, **(headers or {})}
    )
    STATUSES[case][status] += 1
    CHECKS[path](status, answer_headers, answer)
    status, _, health = client.send("GET", "/health")
    assert status == 200, health


INGRESS = fuzz_settings(INGRESS_EXAMPLES)
TIMEOUT = fuzz_timeout(INGRESS_EXAMPLES, 1.0)


@pytest.mark.timeout(TIMEOUT)
@INGRESS
@given(body=mutated(openai_requests(MODELS)), ascii_only=st.booleans())
def test_openai_ingress_never_5xx(client: RawClient, body: Any, ascii_only: bool) -> None:
    exchange(client, "/v1/chat/completions", to_bytes(body, ascii_only), case="openai ingress")


@pytest.mark.timeout(TIMEOUT)
@INGRESS
@given(body=mutated(anthropic_requests(MODELS)), ascii_only=st.booleans())
def test_anthropic_ingress_never_5xx(client: RawClient, body: Any, ascii_only: bool) -> None:
    exchange(client, "/v1/messages", to_bytes(body, ascii_only), case="anthropic ingress")


@pytest.mark.timeout(TIMEOUT)
@INGRESS
@given(path=st.sampled_from(sorted(CHECKS)), body=garbage_bodies())
def test_garbage_bodies_are_4xx_in_shape(client: RawClient, path: str, body: bytes) -> None:
    exchange(client, path, body, case="garbage bodies")


@pytest.mark.timeout(TIMEOUT)
@INGRESS
@given(path=st.sampled_from(sorted(CHECKS)), headers=hostile_headers(), data=st.data())
def test_hostile_headers_are_never_5xx(
    client: RawClient, path: str, headers: dict[str, bytes], data: st.DataObject
) -> None:
    requests = (
        openai_requests(("chat",))
        if path == "/v1/chat/completions"
        else anthropic_requests(("chat",))
    )
    exchange(client, path, to_bytes(data.draw(requests)), headers, case="hostile headers")


# --- regressions: the smallest inputs the properties above found ----------------------------------

DEEP_300 = b'{"a":' * 300 + b"1" + b"}" * 300  # orjson reads 1024 levels, writes only 255
OPENAI, ANTHROPIC = OpenAIUpstream(), AnthropicUpstream()
GEMINI, CLOUDFLARE = GeminiUpstream(), CloudflareUpstream("acc123")
CHOICE = b'{"choices": [{"message": {"content": "x"}}], '


@pytest.mark.parametrize(
    ("dialect", "body"),
    [
        (OPENAI, CHOICE + b'"usage": {"prompt_tokens": "\\u0000"}}'),
        (OPENAI, CHOICE + b'"usage": {"prompt_tokens_details": [1]}}'),
        (OPENAI, CHOICE + b'"created": 1e400}'.replace(b"1e400", b"9" * 40)),
        (OPENAI, b'{"choices": [{"message": {"tool_calls": [1, {"function": 2}]}}]}'),
        (
            OPENAI,
            b'{"choices": [{"message": {"tool_calls": [{"function": {"arguments": '
            + DEEP_300
            + b"}}]}}]}",
        ),
        (ANTHROPIC, b'{"content": [], "usage": [{"input_tokens": 1}]}'),
        (ANTHROPIC, b'{"content": [{"type": "tool_use", "input": ' + DEEP_300 + b"}]}"),
        (
            GEMINI,
            b'{"candidates": [{"content": {"parts": [{"functionCall": {"args": '
            + DEEP_300
            + b"}}]}}]}",
        ),
        (CLOUDFLARE, b'{"result": {"response": "x", "usage": {"prompt_tokens": "many"}}}'),
        (CLOUDFLARE, b'{"result": {"response": ' + DEEP_300 + b"}}"),
    ],
)
def test_decoders_survive_wrong_types_and_deep_values(dialect: Any, body: bytes) -> None:
    try:
        check_response(dialect.decode_response(body))
    except UpstreamError as error:
        check_error(error)


@pytest.mark.parametrize(
    ("dialect", "data"),
    [
        (OPENAI, '{"choices": [{"delta": {"tool_calls": [{"index": "0"}, 7]}}]}'),
        (OPENAI, '{"choices": [[]], "x_groq": []}'),
        (ANTHROPIC, '{"type": "content_block_start", "index": [], "content_block": {}}'),
        (ANTHROPIC, '{"type": "content_block_delta", "index": {}, "delta": []}'),
        (ANTHROPIC, '{"type": "content_block_stop", "index": []}'),
        (CLOUDFLARE, '{"choices": [{"delta": {"tool_calls": [{"index": -1}]}}]}'),
    ],
)
def test_stream_decoders_survive_wrong_types(dialect: Any, data: str) -> None:
    try:
        for delta in dialect.stream_decoder().event(SSEEvent(data)):
            check_delta(delta)
    except UpstreamError as error:
        check_error(error)


@pytest.mark.parametrize(
    "dialect", [OPENAI, ANTHROPIC, GEMINI, CLOUDFLARE], ids=["openai", "anthropic", "gemini", "cf"]
)
@pytest.mark.parametrize("value", ["inf", "1e400", "9" * 400], ids=["inf", "1e400", "nines"])
def test_retry_after_is_finite(dialect: Any, value: str) -> None:
    check_error(dialect.decode_error(429, b"", {"retry-after": value}))
    check_error(dialect.decode_error(429, b"", {"retry-after-ms": value}))
    google = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"retryDelay": f"{value}s"}],
        }
    }
    check_error(GEMINI.decode_error(429, orjson.dumps(google), {}))
