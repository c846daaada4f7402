"""A streamed JSON answer checked as it streams (issue 13, item 5): the incremental checker
against orjson, then real gateways in front of a scripted upstream, driven by the official
openai and anthropic SDKs. A stream that cannot be JSON fails over before its first byte
reaches the client; one that goes wrong after the commit is flagged in the ledger and
counted against its model."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import ledger_rows, sdk_client
from tests.fuzz_strategies import fuzz_settings, json_values
from tests.test_store import fresh_postgres_database, make_row
from tests.upstreams import serve_app
from turnout.accounting.store import make_store
from turnout.execute.json_stream import COMPLETE, INVALID, MAX_DEPTH, PARTIAL, JsonStreamChecker
from turnout.execute.stream_check import first_characters

# --- the checker ----------------------------------------------------------------------------


def verdict(chunks: list[str]) -> tuple[str, int | None, str | None]:
    """Feed `chunks`, then finish: (status, offset, reason)."""
    checker = JsonStreamChecker()
    status = PARTIAL
    for chunk in chunks:
        status = checker.feed(chunk)
        if status == INVALID:
            break
    if status != INVALID:
        status = checker.finish()
    return status, checker.offset, checker.reason


def orjson_accepts(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


TRICKY = (
    '{"s": "a\\"b\\\\c\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00 é😀 \x7f",'
    ' "n": [0, -0, 12, -3.25, 1e5, 1E+5, 2.5e-3, 0.0e-0, 18446744073709551616],'
    ' "l": [true, false, null], "o": {"": {}, "x": [[], [{}]]}}'
)

VALID = [
    TRICKY,
    "{}",
    "[]",
    '  {"a": 1}  \n',
    '"text"',
    "true",
    "null",
    "0",
    "-1.5e-7",
    "[1,2,3]",
    '{"a":{"b":{"c":[1,{"d":null}]}}}',
]


@pytest.mark.parametrize("text", VALID)
def test_valid_json_is_complete_whole_and_char_by_char(text: str) -> None:
    assert orjson_accepts(text)
    assert verdict([text])[0] == COMPLETE
    assert verdict(list(text))[0] == COMPLETE


INVALID_CASES = [
    # (text, offset where it stops being JSON, words of the reason)
    ("Sure! Here is the JSON:", 0, "expected a JSON value"),
    ("  \n Sure", 4, "expected a JSON value"),
    ('```json\n{"a": 1}\n```', 0, "expected a JSON value"),
    ('{"a": 1,', 8, "ends before it is complete"),
    ('{"a": 1, oops', 9, "expected an object key"),
    ('{"a" 1}', 5, "expected ':'"),
    ("[1 2]", 3, "expected ','"),
    ("[1,]", 3, "expected a JSON value"),
    ('{"a": 1,}', 8, "expected an object key"),
    ("[01]", 2, "leading zero"),
    ("[1.]", 3, "incomplete number"),
    ("-", 1, "ends before it is complete"),
    ("tru", 3, "ends before it is complete"),
    ("trux", 3, "unknown literal"),
    ("NaN", 0, "expected a JSON value"),
    ('"a\tb"', 2, "control character"),
    ('"\\x"', 2, "unknown escape"),
    ('"\\u12g4"', 5, "four hex digits"),
    ('"\\ud800"', 7, "high surrogate"),
    ('"\\ud800\\u0041"', 12, "high surrogate"),
    ('"\\udc00"', 6, "low surrogate"),
    ('"a\ud800b"', 2, "lone surrogate"),
    ('{"a": 1} {"b": 2}', 9, "more text after"),
    ("[1e400]", 1, "too large"),
    ("", 0, "empty"),
    ("   \n", 4, "empty"),
    ("\ufeff{}", 0, "expected a JSON value"),
]


@pytest.mark.parametrize(("text", "offset", "why"), INVALID_CASES)
def test_invalid_json_says_where_and_why(text: str, offset: int, why: str) -> None:
    assert not orjson_accepts(text)
    status, at, reason = verdict([text])
    assert (status, at) == (INVALID, offset), reason
    assert why in (reason or "")
    # the same answer whatever the chunks
    assert verdict(list(text))[:2] == (INVALID, offset)


@pytest.mark.parametrize("text", [TRICKY, '{"k": "\\ud83d\\ude00", "n": -12.5e+10}'])
def test_every_split_point_and_every_prefix(text: str) -> None:
    """A token cut anywhere (inside a string, an escape, a \\u escape, a surrogate pair, a
    number, a literal) reads the same; every proper prefix is still possibly valid."""
    for cut in range(len(text) + 1):
        assert verdict([text[:cut], text[cut:]])[0] == COMPLETE, cut
        checker = JsonStreamChecker()
        status = checker.feed(text[:cut])
        assert status == (COMPLETE if cut == len(text) else PARTIAL), (cut, checker.reason)


def test_a_top_level_number_is_complete_only_when_it_ends() -> None:
    checker = JsonStreamChecker()
    assert checker.feed("12") == PARTIAL  # "123" may follow
    assert checker.feed("3") == PARTIAL
    assert checker.finish() == COMPLETE
    assert JsonStreamChecker().feed("12 ") == COMPLETE


def test_nesting_as_deep_as_orjson_takes() -> None:
    deepest = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert orjson_accepts(deepest)
    assert verdict([deepest])[0] == COMPLETE
    deeper = "[" + deepest + "]"
    assert not orjson_accepts(deeper)
    assert verdict([deeper])[:2] == (INVALID, MAX_DEPTH)
    objects = '{"a":' * MAX_DEPTH + "1" + "}" * MAX_DEPTH
    assert verdict([objects])[0] == COMPLETE


def test_the_first_character_is_known_as_soon_as_it_arrives() -> None:
    checker = JsonStreamChecker()
    checker.feed(" \n\t")
    assert checker.first is None
    checker.feed("  {")
    assert checker.first == "{"


def test_a_long_string_in_many_chunks_is_read_once() -> None:
    """Fed one character at a time, a long string is read on, chunk after chunk, without
    losing its place."""
    checker = JsonStreamChecker()
    checker.feed('{"s": "')
    for _ in range(200_000):
        checker.feed("é")
    checker.feed('"}')
    assert checker.finish() == COMPLETE
    assert checker.seen == 200_009


@pytest.mark.parametrize(
    ("schema", "starts"),
    [
        (None, None),
        ({"type": "object"}, "{"),
        ({"type": ["array", "null"]}, "[n"),
        ({"type": "integer"}, "-0123456789"),
        ({"anyOf": [{"type": "object"}]}, None),  # no root type: anything may start it
        ({"type": ["object", "unknown"]}, None),
    ],
)
def test_first_characters_from_the_schema_root_type(schema: Any, starts: str | None) -> None:
    assert first_characters(schema) == starts


def _texts() -> st.SearchStrategy[str]:
    """JSON texts as models write them (compact, indented, escaped or not), and broken ones:
    a character dropped, inserted or swapped somewhere."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        value = draw(json_values(max_leaves=12))
        text = json.dumps(
            value,
            ensure_ascii=draw(st.booleans()),
            indent=draw(st.sampled_from([None, 2])),
            allow_nan=False,
        )
        text = draw(st.sampled_from(["", " ", "\n"])) + text + draw(st.sampled_from(["", "\n"]))
        for _ in range(draw(st.integers(0, 2))):
            at = draw(st.integers(0, len(text)))
            edit = draw(st.sampled_from(["drop", "insert", "swap"]))
            noise = draw(st.sampled_from(list('{}[]",:.-+eE0\\u tfn') + ["\x01", "\ud800"]))
            if edit == "drop":
                text = text[:at] + text[at + 1 :]
            elif edit == "insert":
                text = text[:at] + noise + text[at:]
            else:
                text = text[:at] + noise + text[at + 1 :]
        return text

    return build()


@fuzz_settings(400)
@given(text=_texts(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_agrees_with_orjson_on_random_splits(text: str, seed: int) -> None:
    try:
        orjson.loads(text)
        valid = True
    except (orjson.JSONDecodeError, UnicodeEncodeError):
        valid = False
    whole = verdict([text])
    assert (whole[0] == COMPLETE) == valid, (text, whole)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(1, 12))))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert verdict(chunks) == whole  # the same status, offset and reason, split anywhere


# --- through a real gateway ---------------------------------------------------------------------

GOOD = '{"city": "Paris", "population": 2102650}'
# each model's answer: its content pieces (or whole deltas), streamed in this order
SCRIPTS: dict[str, list[Any]] = {
    "good": ['{"city"', ': "Par', 'is", "popula', 'tion": 2102650}'],
    "prose": ["Sure! ", "Here is the JSON: ", GOOD],
    "fenced": ["```json\n", GOOD, "\n```"],
    "array": ["  ", '[{"city": "Paris"}]'],
    "broken": ['{"city": "Paris",', " oops", " the rest is prose"],
    "mismatch": ['{"city": ', "42}"],
    "cut": ['{"city": "Pa'],  # then finish_reason "length"
    "tool": [
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"q": "Paris"}'}}]},
    ],
}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-script",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _whole(script: list[Any]) -> dict[str, Any]:
    message = {"role": "assistant", "content": "".join(p for p in script if isinstance(p, str))}
    return {
        "id": "chatcmpl-script",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
    }


class ScriptedUpstream:
    """An OpenAI-compatible upstream streaming a fixed script per model name, counting the
    requests each model got."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            model = body["model"]
            self.requests[model] = self.requests.get(model, 0) + 1
            if not body.get("stream"):
                return web.json_response(_whole(SCRIPTS[model]))
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            await response.write(_chunk({"role": "assistant", "content": ""}))
            for piece in SCRIPTS[model]:
                await response.write(
                    _chunk(piece if isinstance(piece, dict) else {"content": piece})
                )
            await response.write(_chunk({}, "length" if model == "cut" else "stop"))
            usage = {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}
            tail = {"id": "chatcmpl-script", "object": "chat.completion.chunk", "created": 0}
            tail |= {"model": "scripted", "choices": [], "usage": usage}
            await response.write(b"data: " + json.dumps(tail).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            return response

        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        return app


@pytest.fixture
def upstream() -> Any:
    scripted = ScriptedUpstream()
    with serve_app(scripted.app()) as port:
        scripted.port = port  # type: ignore[attr-defined]
        yield scripted


def _config(
    port: int, targets: list[str], output_schema: Any = None, buffer_streams: bool = False
) -> dict[str, Any]:
    route: dict[str, Any] = {"targets": targets}
    if buffer_streams:
        route["guard"] = {"buffer_streams": True}
    if output_schema is not None:
        route["output_schema"] = output_schema
    return {
        "providers": {"up": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}},
        "models": {
            name: {"provider": "up", "model": name, "supports": ["tools", "json"]}
            for name in SCRIPTS
        },
        "routes": {"chat": route},
    }


def _stream(gateway: Any, response_format: dict[str, Any]) -> tuple[str, Any]:
    with sdk_client(gateway).chat.completions.with_streaming_response.create(
        model="chat",
        messages=[{"role": "user", "content": "The largest city of France, as JSON"}],
        response_format=response_format,  # type: ignore[arg-type]
        stream=True,
    ) as response:
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
        return text, response.headers


def _health(gateway: Any, model: str) -> dict[str, Any]:
    return gateway.get("/health/providers").json()["models"][model]


def _row(gateway: Any, tmp_path: Path) -> Any:
    gateway.stop()  # the ledger is drained on exit
    [row] = ledger_rows("sqlite", str(tmp_path / "turnout.db"))
    return row


JSON_OBJECT = {"type": "json_object"}
CLIENT_SCHEMA = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}


@pytest.mark.parametrize(
    ("primary", "response_format", "reason"),
    [
        ("prose", JSON_OBJECT, "invalid_output(json)"),
        ("fenced", JSON_OBJECT, "invalid_output(json)"),
        ("array", CLIENT_SCHEMA, "invalid_output(schema)"),  # the schema's root is an object
    ],
)
def test_a_stream_that_cannot_be_json_fails_over_before_its_first_byte(
    gateway_factory, upstream, tmp_path, primary, response_format, reason
) -> None:
    gateway = gateway_factory(_config(upstream.port, [primary, "good"]))
    text, headers = _stream(gateway, response_format)
    assert text == GOOD  # nothing of the primary's answer reached the client
    assert headers["x-turnout-model"] == "good"
    assert headers["x-turnout-fallback"] == f"{primary}={reason}"
    assert upstream.requests == {primary: 1, "good": 1}
    row = _row(gateway, tmp_path)
    assert (row.outcome, row.model, row.output_check) == ("ok", "good", "ok")
    assert row.attempts == [{"model": primary, "reason": reason}]


def test_invalid_json_after_the_commit_is_sent_flagged_and_counted(
    gateway_factory, upstream, tmp_path
) -> None:
    gateway = gateway_factory(_config(upstream.port, ["broken", "good"]))
    text, headers = _stream(gateway, JSON_OBJECT)
    assert text == "".join(SCRIPTS["broken"])  # what was sent stays sent
    assert headers["x-turnout-model"] == "broken"
    assert upstream.requests == {"broken": 1}
    health = _health(gateway, "broken")
    assert health["failures"] == 1, health
    assert health["last_error"]["class"] == "invalid_output"
    row = _row(gateway, tmp_path)
    assert (row.outcome, row.model, row.output_check) == ("ok", "broken", "invalid_json")
    assert (row.prompt_tokens, row.completion_tokens) == (9, 7)  # the upstream's usage


def test_json_cut_at_the_clients_max_tokens_is_flagged_not_counted(
    gateway_factory, upstream, tmp_path
) -> None:
    gateway = gateway_factory(_config(upstream.port, ["cut"]))
    with sdk_client(gateway).chat.completions.with_streaming_response.create(
        model="chat",
        messages=[{"role": "user", "content": "The largest city of France, as JSON"}],
        response_format=JSON_OBJECT,  # type: ignore[arg-type]
        max_tokens=5,
        stream=True,
    ) as response:
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == '{"city": "Pa'
    assert _health(gateway, "cut")["failures"] == 0  # the client's own limit cut it
    assert _row(gateway, tmp_path).output_check == "invalid_json"


def test_a_good_stream_is_checked_and_relayed_as_it_came(
    gateway_factory, upstream, tmp_path
) -> None:
    gateway = gateway_factory(_config(upstream.port, ["good"]))
    text, headers = _stream(gateway, CLIENT_SCHEMA)
    assert text == GOOD
    assert "x-turnout-fallback" not in headers
    assert _health(gateway, "good")["failures"] == 0
    assert _row(gateway, tmp_path).output_check == "ok"


def test_a_schema_mismatch_after_the_commit_is_flagged_not_counted_for_a_client_schema(
    gateway_factory, upstream, tmp_path
) -> None:
    # the client's schema may be one no model can satisfy (test_guard_abuse.py): not counted
    gateway = gateway_factory(_config(upstream.port, ["mismatch"]))
    text, _ = _stream(gateway, CLIENT_SCHEMA)
    assert text == '{"city": 42}'
    assert _health(gateway, "mismatch")["failures"] == 0
    assert _row(gateway, tmp_path).output_check == "schema_mismatch"


def test_a_schema_mismatch_after_the_commit_counts_for_the_routes_schema(
    gateway_factory, upstream, tmp_path
) -> None:
    # the route's own schema is the operator's: the model missed it, and that counts
    gateway = gateway_factory(_config(upstream.port, ["mismatch"], output_schema=SCHEMA))
    text, _ = _stream(gateway, JSON_OBJECT)
    assert text == '{"city": 42}'
    health = _health(gateway, "mismatch")
    assert health["failures"] == 1
    assert health["last_error"]["class"] == "invalid_output"
    assert _row(gateway, tmp_path).output_check == "schema_mismatch"


def test_a_stream_without_json_asked_is_not_checked(gateway_factory, upstream, tmp_path) -> None:
    gateway = gateway_factory(_config(upstream.port, ["prose", "good"]))
    chunks = sdk_client(gateway).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(SCRIPTS["prose"])
    row = _row(gateway, tmp_path)
    assert (row.model, row.output_check) == ("prose", None)


def test_buffered_streams_are_checked_whole_as_before(gateway_factory, upstream, tmp_path) -> None:
    """`guard.buffer_streams`: the whole answer is checked before it is sent, so a fenced
    one is unwrapped (repaired), not failed over."""
    gateway = gateway_factory(_config(upstream.port, ["fenced", "good"], buffer_streams=True))
    text, headers = _stream(gateway, JSON_OBJECT)
    assert text == GOOD
    assert headers["x-turnout-model"] == "fenced"
    assert upstream.requests == {"fenced": 1}
    assert _row(gateway, tmp_path).output_check == "ok"


def test_a_tool_call_streamed_as_the_answer_is_not_checked(
    gateway_factory, upstream, tmp_path
) -> None:
    gateway = gateway_factory(_config(upstream.port, ["tool", "good"]))
    chunks = sdk_client(gateway).chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "Look Paris up, answer in JSON"}],
        response_format=JSON_OBJECT,  # type: ignore[arg-type]
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
        stream=True,
    )
    arguments = "".join(
        call.function.arguments or ""
        for chunk in chunks
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or ()
        if call.function
    )
    assert arguments == '{"q": "Paris"}'
    assert upstream.requests == {"tool": 1}
    row = _row(gateway, tmp_path)
    assert (row.model, row.output_check) == ("tool", None)


def test_a_whole_answer_checked_by_the_guard_is_recorded_ok(
    gateway_factory, upstream, tmp_path
) -> None:
    gateway = gateway_factory(_config(upstream.port, ["prose", "good"]))
    answer = sdk_client(gateway).chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "The largest city of France, as JSON"}],
        response_format=JSON_OBJECT,  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.content == GOOD
    row = _row(gateway, tmp_path)
    assert (row.model, row.output_check) == ("good", "ok")
    assert row.attempts == [{"model": "prose", "reason": "invalid_output(json)"}]


def test_the_anthropic_sdk_streams_only_the_good_json(gateway_factory, upstream, tmp_path) -> None:
    # Anthropic's API has no response format: the route's output_schema asks for JSON
    gateway = gateway_factory(_config(upstream.port, ["prose", "good"], output_schema=SCHEMA))
    client = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    with client.messages.stream(
        model="chat",
        max_tokens=200,
        messages=[{"role": "user", "content": "The largest city of France, as JSON"}],
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == GOOD
    assert upstream.requests == {"prose": 1, "good": 1}
    row = _row(gateway, tmp_path)
    assert (row.dialect, row.model, row.output_check) == ("anthropic", "good", "ok")
    assert row.attempts == [{"model": "prose", "reason": "invalid_output(json)"}]


# --- the ledger column ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_the_ledger_keeps_the_output_check(backend: str, tmp_path: Path) -> None:
    async def round_trip(where: str) -> dict[str, str | None]:
        store = make_store(backend, path=where, dsn=where)
        await store.start()
        checks = ["ok", "invalid_json", "schema_mismatch", None]
        for check in checks:
            store.record(make_row(id=f"row-{check}", output_check=check))
        await store.close()  # drains the queued rows
        store = make_store(backend, path=where, dsn=where)
        await store.start()
        try:
            return {row.id: row.output_check for row in await store.rows()}
        finally:
            await store.close()

    if backend == "sqlite":
        kept = await round_trip(str(tmp_path / "ledger.db"))
    else:
        async with fresh_postgres_database() as dsn:
            kept = await round_trip(dsn)
    assert kept == {f"row-{c}": c for c in ["ok", "invalid_json", "schema_mismatch", None]}
