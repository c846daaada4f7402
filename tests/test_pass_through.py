"""Same-dialect pass-through: an OpenAI client routed to an OpenAI-compatible upstream gets the
upstream's own answer object back, with only `model` (the target's name) and `usage` (turnout's
cost) set, and only the usage decoded. Everything that reads the answer (the output guard, a
stale copy, capture, an Anthropic client) and every body the full decode would change still
gets the full decode.

The comparison is end to end: the same recorded body is asked for through a plain route (the
pass-through) and through a route that keeps stale answers (today's decode and re-encode), and
the first must be a superset of the second.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp import web
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.conftest import ledger_rows, sdk_client
from tests.fuzz_strategies import CASES, fuzz_settings, garbage_bodies, mutated, to_bytes
from tests.upstreams import serve_app
from tests.vectors import OPENAI_COMPATIBLE, chat_completions, needs
from turnout.dialects.openai.ingress import encode_response
from turnout.dialects.openai.upstream import decode_response, pass_through
from turnout.model import UpstreamError

PRICE = {"input": 1.00, "output": 5.00, "cached_input": 0.10}
MESSAGES = [{"role": "user", "content": "hello"}]

# an answer with everything a real host adds beyond what turnout re-encodes
RICH = {
    "id": "chatcmpl-rich",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "upstream-model-2024",
    "system_fingerprint": "fp_abc123",
    "service_tier": "default",
    "provider": "Groq",
    "x_groq": {"id": "req_01"},
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi there", "refusal": None},
            "logprobs": {"content": [{"token": "hi", "logprob": -0.01, "top_logprobs": []}]},
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1_000,
        "completion_tokens": 200,
        "total_tokens": 1_200,
        "queue_time": 0.02,
        "prompt_tokens_details": {"cached_tokens": 400, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        "cost": 99.0,  # the provider's own figure: the client gets turnout's instead
    },
}
RICH_COST = (600 * 1.00 + 400 * 0.10 + 200 * 5.00) / 1e6


def _with_message(message: dict[str, Any], **choice: Any) -> dict[str, Any]:
    body = copy.deepcopy(RICH)
    body["choices"][0]["message"] = {"role": "assistant", **message}
    body["choices"][0].update(choice)
    return body


# bodies a full decode changes in a field today's client sees: each must be decoded in full
UNPLAIN = {
    # Mistral's reasoning models: content as parts, thinking parts as the reasoning
    "parts": _with_message(
        {
            "content": [
                {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
                {"type": "text", "text": "answer"},
            ]
        }
    ),
    # a tool call without an id and without arguments (OpenRouter leaves them out)
    "bare-call": _with_message(
        {"content": None, "tool_calls": [{"type": "function", "function": {"name": "f"}}]},
        finish_reason="tool_calls",
    ),
    # no finish reason at all
    "no-finish": _with_message({"content": "x"}, finish_reason=None),
}
# what today's client sees for each of them, field by field
UNPLAIN_SEEN = {
    "parts": ("content", "answer"),
    "bare-call": ("tool_calls", [("call_0", "f", "{}")]),
    "no-finish": ("finish_reason", "stop"),
}
ERROR_IN_200 = {"error": {"message": "model overloaded", "code": 503}}
FENCED = _with_message({"content": '```json\n{"answer": 42}\n```'})
SCHEMA = {"type": "object", "required": ["answer"]}


class Upstream:
    """Answers each chat completion with the body registered for its upstream model name."""

    def __init__(self, bodies: dict[str, Any]) -> None:
        self.bodies = {name: orjson.dumps(body) for name, body in bodies.items()}

    async def handle(self, request: web.Request) -> web.Response:
        model = (await request.json())["model"]
        return web.Response(body=self.bodies[model], content_type="application/json")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        return app


def _config(port: int, names: list[str]) -> dict[str, Any]:
    """Model `m-NAME` answers with body NAME; routes `plain-NAME` (the pass-through) and
    `stale-NAME` (keeps stale answers: today's full decode), plus the other fallbacks."""
    routes: dict[str, Any] = {}
    for name in names:
        routes[f"plain-{name}"] = {"targets": [f"m-{name}"]}
        routes[f"stale-{name}"] = {"targets": [f"m-{name}"], "stale_if_error": {}}
    if "rich" in names:
        routes["capture"] = {"targets": ["m-rich"], "capture": {}}
    if "fenced" in names:
        routes["guarded"] = {"targets": ["m-fenced"], "output_schema": SCHEMA}
    return {
        "providers": {"up": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}},
        "models": {
            f"m-{name}": {"provider": "up", "model": name, "price": PRICE, "supports": ["json"]}
            for name in names
        },
        "routes": routes,
    }


def _ask(gateway, route: str, **extra: Any) -> tuple[dict[str, Any], Any]:
    """(the body the client got, as JSON; the SDK's parsed answer)."""
    raw = sdk_client(gateway).chat.completions.with_raw_response.create(
        model=route, messages=MESSAGES, **extra
    )
    return raw.http_response.json(), raw.parse()


def _superset(passed: Any, decoded: Any, path: str = "") -> None:
    """Every field today's answer has is in the pass-through one, with the same value; only
    `logprobs` (always null today) may carry the upstream's."""
    if isinstance(decoded, dict):
        assert isinstance(passed, dict), path
        for key, value in decoded.items():
            assert key in passed, f"{path}.{key} missing"
            if key == "logprobs" and value is None:
                continue
            _superset(passed[key], value, f"{path}.{key}")
    elif isinstance(decoded, list):
        assert isinstance(passed, list) and len(passed) == len(decoded), path
        for i, (a, b) in enumerate(zip(passed, decoded, strict=True)):
            _superset(a, b, f"{path}[{i}]")
    else:
        assert passed == decoded, f"{path}: {passed!r} != {decoded!r}"


@pytest.fixture
def gateway(gateway_factory):
    bodies = {"rich": RICH, "fenced": FENCED, "error": ERROR_IN_200, **UNPLAIN}
    with serve_app(Upstream(bodies).app()) as port:
        yield gateway_factory(_config(port, list(bodies)))


def test_the_client_gets_the_upstreams_answer_with_our_model_and_cost(
    gateway, tmp_path: Path
) -> None:
    body, parsed = _ask(gateway, "plain-rich")
    decoded, _ = _ask(gateway, "stale-rich")
    _superset(body, decoded)
    # the upstream's own fields reach the client
    for key in ("system_fingerprint", "service_tier", "provider", "x_groq"):
        assert body[key] == RICH[key]
        assert key not in decoded  # today's re-encode drops them
    assert body["choices"][0]["logprobs"] == RICH["choices"][0]["logprobs"]
    assert body["choices"][0]["message"]["refusal"] is None
    assert parsed.system_fingerprint == "fp_abc123"
    assert parsed.choices[0].logprobs.content[0].token == "hi"
    # model is the target's name, as today; the usage keeps the upstream's details and gets
    # turnout's cost, not the provider's
    assert parsed.model == decoded["model"] == "m-rich"
    assert parsed.choices[0].message.content == "hi there"
    assert parsed.usage.prompt_tokens == 1_000 and parsed.usage.completion_tokens == 200
    assert body["usage"]["cost"] == pytest.approx(RICH_COST)
    assert body["usage"]["queue_time"] == 0.02
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 400, "audio_tokens": 0}
    gateway.stop()
    rows = ledger_rows("sqlite", str(tmp_path / "turnout.db"))
    assert len(rows) == 2
    for row in rows:  # the pass-through's row is today's row
        assert (row.model, row.prompt_tokens, row.cached_tokens, row.completion_tokens) == (
            "m-rich",
            1_000,
            400,
            200,
        )
        assert row.cost_usd == pytest.approx(RICH_COST)
        assert row.provider_cost_usd == 99.0
        assert row.outcome == "ok"


def test_what_reads_the_answer_gets_it_decoded(gateway) -> None:
    """Capture, the output guard and an Anthropic client each need the decoded answer."""
    captured, _ = _ask(gateway, "capture")
    assert "system_fingerprint" not in captured
    assert captured["choices"][0]["message"]["content"] == "hi there"
    # the guard checks (and unwraps) the answer: a decoded one
    raw = sdk_client(gateway).chat.completions.with_raw_response.create(
        model="guarded", messages=MESSAGES, response_format={"type": "json_object"}
    )
    guarded = raw.http_response.json()
    assert raw.headers["x-turnout-guard"] == "valid"
    assert orjson.loads(guarded["choices"][0]["message"]["content"]) == {"answer": 42}
    assert "system_fingerprint" not in guarded
    # the same body through a plain route, unguarded, is passed through as it is
    plain, _ = _ask(gateway, "plain-fenced")
    assert plain["system_fingerprint"] == "fp_abc123"
    assert plain["choices"][0]["message"]["content"].startswith("```json")
    client = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    message = client.messages.create(model="plain-rich", max_tokens=50, messages=MESSAGES)
    assert message.content[0].text == "hi there"
    usage = message.usage  # Anthropic counts cache reads apart from input
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (
        600,
        400,
        200,
    )


@pytest.mark.parametrize("name", sorted(UNPLAIN))
def test_bodies_the_decode_changes_are_decoded(gateway, name: str) -> None:
    body, parsed = _ask(gateway, f"plain-{name}")
    decoded, _ = _ask(gateway, f"stale-{name}")
    assert body == decoded
    assert "system_fingerprint" not in body
    field, seen = UNPLAIN_SEEN[name]
    value = getattr(parsed.choices[0], field, None) or getattr(parsed.choices[0].message, field)
    if field == "tool_calls":
        value = [(c.id, c.function.name, c.function.arguments) for c in value]
    assert value == seen


def test_an_error_inside_a_200_is_still_an_error(gateway) -> None:
    with pytest.raises(openai.InternalServerError) as plain:
        _ask(gateway, "plain-error")
    with pytest.raises(openai.InternalServerError) as decoded:
        _ask(gateway, "stale-error")
    assert plain.value.status_code == decoded.value.status_code == 503
    assert "m-error: server_error(503)" in str(plain.value)


def test_reasoning_is_still_named_reasoning_content(gateway_factory) -> None:
    """OpenRouter and Groq say `reasoning`; today's clients read it as reasoning_content."""
    body = _with_message({"content": "42", "reasoning": "thinking it over"})
    with serve_app(Upstream({"r": body}).app()) as port:
        gateway = gateway_factory(_config(port, ["r"]))
        passed, _ = _ask(gateway, "plain-r")
        decoded, _ = _ask(gateway, "stale-r")
    _superset(passed, decoded)
    assert passed["choices"][0]["message"]["reasoning_content"] == "thinking it over"
    assert passed["system_fingerprint"] == "fp_abc123"


@needs(*OPENAI_COMPATIBLE)
def test_every_recorded_answer_passes_through_as_a_superset(gateway_factory) -> None:
    """Real answers of OpenAI, OpenRouter, Groq, Cerebras, DeepSeek, Mistral and Ollama."""
    recorded = [
        item
        for item in chat_completions()
        if item.status == 200
        and not item.is_stream
        and isinstance(item.response_json, dict)
        and "choices" in item.response_json
    ]
    bodies = {str(i): item.response_json for i, item in enumerate(recorded)}
    kept, fingerprinted = 0, 0
    with serve_app(Upstream(bodies).app()) as port:
        gateway = gateway_factory(_config(port, list(bodies)))
        for name, item in zip(bodies, recorded, strict=True):
            passed, _ = _ask(gateway, f"plain-{name}")
            decoded, _ = _ask(gateway, f"stale-{name}")
            _superset(passed, decoded, item.id)
            assert passed["model"] == f"m-{name}" and "cost" in passed["usage"]
            fingerprint = item.response_json.get("system_fingerprint")
            if fingerprint is not None:
                fingerprinted += 1
                kept += passed.get("system_fingerprint") == fingerprint
    # today's re-encode drops it; none of the answers that carry one needs the full decode
    assert kept == fingerprinted > 50


SEEDS = [
    item.response_json
    for item in chat_completions()
    if item.status == 200 and isinstance(item.response_json, dict)
] + [RICH, FENCED, ERROR_IN_200, *UNPLAIN.values()]


def _written_size(value: Any, limit: int = 100_000) -> int:
    """How many values the JSON text of `value` writes, counted up to `limit`: a mutation
    that copies a value into itself again and again makes a small object whose text is
    exponentially long."""
    seen, stack = 0, [value]
    while stack and seen < limit:
        item = stack.pop()
        seen += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return seen


def _both(body: bytes) -> tuple[Any, Any]:
    """What the client gets, pass-through and full decode, each as JSON or the error."""
    out: list[Any] = []
    for decode in (pass_through, decode_response):
        try:
            response = decode(body)
        except UpstreamError as error:
            out.append((error.error_class, error.message, error.status))
            continue
        response.usage.cost = 0.25  # what the core sets before the client's encoder runs
        out.append(orjson.loads(encode_response(response, "target")))
    return out[0], out[1]


@fuzz_settings(150)
@given(data=st.data())
def test_any_body_passes_through_as_a_superset_or_fails_as_today(data: st.DataObject) -> None:
    """On mutated real answers: the same error as the full decode, or a superset of its
    answer; never an exception of another kind, also when the client's encoder runs."""
    CASES["openai pass_through"] += 1
    if data.draw(st.integers(0, 9)) == 0:
        body = data.draw(garbage_bodies())
    else:
        value = data.draw(mutated(st.sampled_from(SEEDS)))
        assume(_written_size(value) < 100_000)
        body = to_bytes(value, ascii_only=data.draw(st.booleans()))
    passed, decoded = _both(body)
    if isinstance(decoded, tuple):
        assert passed == decoded
    else:
        _superset(passed, decoded)


def test_a_field_too_deep_to_write_again_is_left_out() -> None:
    """orjson reads 1024 levels of nesting but writes only 255."""
    deep = b'"deep":' + b'{"a":' * 300 + b"1" + b"}" * 300
    passed, decoded = _both(orjson.dumps({**RICH, "x": 1}).replace(b'"x":1', deep))
    assert passed == decoded  # decoded in full: what it ignores is not written
