"""Continuing a broken stream on another model (issue 16, item 3), on a real gateway with the
official openai and anthropic SDKs: a stream broken at its 20th chunk continues on another
model and the client's text is the intended text, no word duplicated or missing; a stream
that was sending tool calls ends with the explicit error event; and when continuation is off
or impossible, every client dialect gets that event, never a stream that looks complete.

The first model is the simulator, cut after 20 pieces of INTENDED; the continuing model is
tests/continuing_upstream.py, which carries on from a prefill (or an instruction) and repeats
the last words, as models do, so the gateway has an overlap to trim."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import http, ledger_rows, sdk_client, sim_config
from tests.continuing_upstream import INTENDED, Continuing, pieces
from tests.upstreams import serve_app
from turnout.execute.continuation import INSTRUCTION, Overlap, overlap

ANTHROPIC_ENV = {"CONT_ANTHROPIC_KEY": "sk-ant-test-0123456789"}
PRICES = {"broken": {"input": 1.0, "output": 2.0}}
BROKEN_AT_20 = {"reply": INTENDED, "stream_error_after": 20}  # an in-band error event
CUT_AT_20 = {"reply": INTENDED, "disconnect_rate": 1.0, "disconnect_after": 21}  # (+ role)
SENT = "".join(pieces(INTENDED)[:20])  # what reached the client before the break


def gateway_config(
    first: dict[str, Any],
    port: int,
    *,
    kind: str = "openai",
    supports: list[str] | None = None,
    on_stream_break: str = "continue",
    targets: list[str] | None = None,
) -> dict[str, Any]:
    """Route `chat`: the sim's `broken` model, then `cont` on the continuing upstream."""
    config = sim_config(
        {"broken": first},
        {
            "chat": {
                "targets": targets or ["broken", "cont"],
                "on_stream_break": on_stream_break,
            }
        },
        prices=PRICES,
    )
    provider: dict[str, Any] = {"kind": kind, "base_url": f"http://127.0.0.1:{port}/v1"}
    if kind == "anthropic":
        provider = {
            "kind": "anthropic",
            "base_url": f"http://127.0.0.1:{port}",
            "api_key": "${CONT_ANTHROPIC_KEY}",
        }
    config["providers"]["up"] = provider
    config["models"]["cont"] = {
        "provider": "up",
        "model": "cont-upstream",
        "supports": ["tools", "json", "vision", *(supports or [])],
        "price": {"input": 3.0, "output": 15.0},
    }
    return config


def openai_text(gateway: Any) -> tuple[str, list[Any]]:
    chunks = list(
        sdk_client(gateway).chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "tell me about the lighthouse"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def anthropic_client(gateway: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0, timeout=20)


def the_row(gateway: Any, tmp_path: Any) -> Any:
    gateway.stop()  # the ledger is drained on exit
    [row] = ledger_rows("sqlite", str(tmp_path / "turnout.db"))
    return row


# --- the overlap ------------------------------------------------------------------------------


def test_overlap_is_the_longest_repeat() -> None:
    assert overlap("the quick brown fox", " brown fox jumps") == len(" brown fox")
    assert overlap("the quick brown fox", " jumps") == 0
    assert overlap("ends with a space ", " next") == 1  # Anthropic's stripped prefill
    trim = Overlap("the quick brown fox")
    # " brown" may be the start of a longer repeat: held back until that is known
    assert [trim.feed(p) for p in (" brown", " fox", " jumps")] == ["", "", " jumps"]
    assert trim.done
    fresh = Overlap("the quick brown fox")
    assert fresh.feed(" over") == " over"  # not a repeat: nothing held


# --- continued: the must-show -------------------------------------------------------------------


@pytest.mark.parametrize("break_", [BROKEN_AT_20, CUT_AT_20], ids=["error_event", "disconnect"])
def test_openai_client_stream_broken_at_20_continues_with_prefill(
    gateway_factory, tmp_path, break_
) -> None:
    upstream = Continuing(repeat=1)
    with serve_app(upstream.app) as port:
        gateway = gateway_factory(gateway_config(break_, port, supports=["prefill"]))
        text, chunks = openai_text(gateway)
        assert text == INTENDED  # nothing repeated, nothing missing
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finishes[-1] == "stop" and finishes.count("stop") == 1  # one ending, normal
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens >= len(pieces(INTENDED))
        # the partial answer went as vLLM's prefill
        [body] = upstream.bodies
        assert body["continue_final_message"] is True
        assert body["add_generation_prompt"] is False
        assert body["messages"][-1] == {"role": "assistant", "content": SENT}
        row = the_row(gateway, tmp_path)
    assert row.outcome == "ok" and row.model == "broken"
    [part] = [a for a in row.attempts if a["model"] == "cont"]
    assert part["reason"].startswith("continued(")  # (with why the first stream broke)
    assert part["completion_tokens"] == len(pieces(INTENDED[len(SENT) :])) + 1  # (one again)
    assert part["cost_usd"] > 0
    # both models: the row's tokens and cost are the sums, each part at its own price (the
    # first's usage estimated: it broke before reporting any)
    assert row.completion_tokens == 20 + part["completion_tokens"]
    first_prompt = row.prompt_tokens - part["prompt_tokens"]
    first_cost = (first_prompt * 1.0 + 20 * 2.0) / 1e6
    assert part["cost_usd"] == pytest.approx((50 * 3.0 + part["completion_tokens"] * 15.0) / 1e6)
    assert row.cost_usd == pytest.approx(first_cost + part["cost_usd"])


def test_anthropic_client_stream_broken_at_20_continues_natively(gateway_factory, tmp_path) -> None:
    upstream = Continuing(repeat=1)
    with serve_app(upstream.app) as port:
        config = gateway_config(CUT_AT_20, port, kind="anthropic")
        gateway = gateway_factory(config, env=ANTHROPIC_ENV)
        with anthropic_client(gateway).messages.stream(
            model="chat",
            max_tokens=500,
            messages=[{"role": "user", "content": "tell me about the lighthouse"}],
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == INTENDED
        assert final.stop_reason == "end_turn"
        assert final.usage.output_tokens >= len(pieces(INTENDED))
        # Anthropic continues a last assistant turn: the partial answer, stripped of
        # trailing whitespace as the Messages API requires
        [body] = upstream.bodies
        assert body["messages"][-1] == {
            "role": "assistant",
            "content": [{"type": "text", "text": SENT.rstrip()}],
        }
        assert body["max_tokens"] == 500 - 20  # what the first model wrote is taken off
        row = the_row(gateway, tmp_path)
    assert row.model == "broken" and row.outcome == "ok"
    assert [a["model"] for a in row.attempts] == ["cont"]


def test_without_prefill_the_model_is_told_to_continue(gateway_factory, tmp_path) -> None:
    upstream = Continuing(repeat=1)  # (told to continue, it starts three words back)
    with serve_app(upstream.app) as port:
        gateway = gateway_factory(gateway_config(BROKEN_AT_20, port))
        text, _ = openai_text(gateway)
        assert text == INTENDED
        [body] = upstream.bodies
        assert "continue_final_message" not in body  # OpenAI itself would refuse it
        assert body["messages"][-2:] == [
            {"role": "assistant", "content": SENT},
            {"role": "user", "content": INSTRUCTION},
        ]


def test_the_next_available_target_continues(gateway_factory, tmp_path) -> None:
    upstream = Continuing(repeat=1)
    with serve_app(upstream.app) as port:
        config = gateway_config(BROKEN_AT_20, port, supports=["prefill"])
        config["providers"]["sim"]["sim"]["down"] = {"error_rate": {500: 1.0}}
        config["models"]["down"] = {"provider": "sim"}
        config["routes"]["chat"]["targets"] = ["broken", "down", "cont"]
        gateway = gateway_factory(config)
        text, _ = openai_text(gateway)
        assert text == INTENDED
        row = the_row(gateway, tmp_path)
    assert [(a["model"], a["reason"]) for a in row.attempts] == [
        ("down", "continuation(server_error(500))"),  # tried first, failed before a token
        ("cont", "continued(overloaded(529))"),
    ]


# --- not continued: the explicit error event ------------------------------------------------------


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                "required": ["city", "unit"],
            },
        },
    }
]
TOOL_BREAK = {"reply": INTENDED, "stream_error_after": 3}  # 3 argument pieces, then an error


def test_a_break_during_tool_calls_is_an_explicit_error_openai(gateway_factory, tmp_path) -> None:
    upstream = Continuing()
    with serve_app(upstream.app) as port:
        gateway = gateway_factory(gateway_config(TOOL_BREAK, port, supports=["prefill"]))
        chunks = sdk_client(gateway).chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=TOOLS,
            tool_choice="required",
            stream=True,
        )
        seen: list[Any] = []
        with pytest.raises(openai.APIError, match="failed after it started"):
            seen.extend(chunks)
        assert any(c.choices and c.choices[0].delta.tool_calls for c in seen)
        assert upstream.bodies == []  # never continued
        row = the_row(gateway, tmp_path)
    assert row.outcome == "stream_failed"


def test_a_break_during_tool_calls_is_an_explicit_error_anthropic(gateway_factory) -> None:
    upstream = Continuing()
    with serve_app(upstream.app) as port:
        gateway = gateway_factory(gateway_config(TOOL_BREAK, port, supports=["prefill"]))
        anthropic_tools = [
            {
                "name": "get_weather",
                "description": "The weather in a city",
                "input_schema": TOOLS[0]["function"]["parameters"],
            }
        ]
        kinds: list[str] = []
        stream = anthropic_client(gateway).messages.stream(
            model="chat",
            max_tokens=200,
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=anthropic_tools,
            tool_choice={"type": "any"},
        )
        with (
            pytest.raises(anthropic.APIStatusError, match="failed after it started"),
            stream as events,
        ):
            kinds.extend(event.type for event in events)  # (kept up to the error)
        assert "content_block_start" in kinds  # the tool call had begun
        assert "message_stop" not in kinds
        assert upstream.bodies == []


def _raw_stream(gateway: Any, path: str, body: bytes) -> bytes:
    result = http("POST", gateway.url + path, body)
    assert result.status == 200
    return result.body


@pytest.mark.parametrize(
    ("on_stream_break", "targets"),
    [("error", ["broken", "cont"]), ("continue", ["broken"])],
    ids=["off", "no_other_target"],
)
def test_no_continuation_means_an_explicit_error_in_every_dialect(
    gateway_factory, on_stream_break, targets
) -> None:
    upstream = Continuing()
    with serve_app(upstream.app) as port:
        config = gateway_config(
            BROKEN_AT_20, port, on_stream_break=on_stream_break, targets=targets
        )
        gateway = gateway_factory(config)
        ask = b'"messages": [{"role": "user", "content": "hi"}]'
        chat = _raw_stream(
            gateway, "/v1/chat/completions", b'{"model": "chat", "stream": true, ' + ask + b"}"
        )
        assert b'"error"' in chat and b"[DONE]" not in chat
        messages = _raw_stream(
            gateway,
            "/v1/messages",
            b'{"model": "chat", "stream": true, "max_tokens": 100, ' + ask + b"}",
        )
        assert b"event: error" in messages and b"message_stop" not in messages
        responses = _raw_stream(
            gateway, "/v1/responses", b'{"model": "chat", "stream": true, "input": "hi"}'
        )
        assert b"response.failed" in responses and b"response.completed" not in responses
        assert upstream.bodies == []
