"""Stalled streams (issue 16, item 2): `timeout: {idle: ...}`, the longest gap between chunks
after the first token. A stall before the first token fails over invisibly; after it, the
stream is continued on another model (`on_stream_break: continue`) or ended with the explicit
error event, and the stalled upstream's connection is closed. A real gateway, the simulator's
`stall_after`/`stall_for`, and the official SDKs."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import ledger_rows, sdk_client, sim_config
from tests.continuing_upstream import INTENDED, Continuing, Stalling, pieces
from tests.upstreams import serve_app

STALL_AT_20 = {"reply": INTENDED, "stall_after": 20, "stall_for": 30}


def ask_openai(gateway: Any) -> str:
    chunks = sdk_client(gateway).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "the lighthouse?"}], stream=True
    )
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def the_row(gateway: Any, tmp_path: Any) -> Any:
    gateway.stop()  # the ledger is drained on exit
    [row] = ledger_rows("sqlite", str(tmp_path / "turnout.db"))
    return row


def test_a_stall_before_the_first_token_fails_over(gateway_factory, tmp_path) -> None:
    models = {
        "stalls": {"reply": "never seen", "stall_after": 0, "stall_for": 30},
        "steady": {"reply": INTENDED},
    }
    route = {"targets": ["stalls", "steady"], "timeout": {"ttft": 1, "idle": 0.5}}
    gateway = gateway_factory(sim_config(models, {"chat": route}))
    assert ask_openai(gateway) == INTENDED  # the client never saw the stalled one
    row = the_row(gateway, tmp_path)
    assert row.model == "steady" and row.outcome == "ok"
    assert row.attempts == [{"model": "stalls", "reason": "timeout(ttft)"}]


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_a_stall_after_the_first_token_is_continued(gateway_factory, tmp_path, client) -> None:
    upstream = Continuing(repeat=1)
    with serve_app(upstream.app) as port:
        config = sim_config(
            {"stalls": STALL_AT_20},
            {
                "chat": {
                    "targets": ["stalls", "cont"],
                    "timeout": {"idle": 0.5},
                    "on_stream_break": "continue",
                }
            },
        )
        config["providers"]["up"] = {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}
        config["models"]["cont"] = {"provider": "up", "supports": ["prefill"]}
        gateway = gateway_factory(config)
        if client == "openai":
            text = ask_openai(gateway)
        else:
            messages = anthropic.Anthropic(base_url=gateway.url, api_key="-", max_retries=0)
            with messages.messages.stream(
                model="chat",
                max_tokens=500,
                messages=[{"role": "user", "content": "the lighthouse?"}],
            ) as stream:
                text = "".join(stream.text_stream)
                assert stream.get_final_message().stop_reason == "end_turn"
        assert text == INTENDED
        assert len(upstream.bodies) == 1
        row = the_row(gateway, tmp_path)
    assert row.model == "stalls" and row.outcome == "ok"
    [part] = row.attempts
    assert part["model"] == "cont" and part["reason"] == "continued(stream_broken(idle))"


def test_a_stall_after_the_first_token_ends_explicitly_and_is_closed(
    gateway_factory, tmp_path
) -> None:
    stalling = Stalling(after=20)
    with serve_app(stalling.app) as port:
        config = {
            "providers": {"quiet": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}},
            # the model's own idle limit overrides the route's, like ttft and total
            "models": {"quiet-m": {"provider": "quiet", "timeout": {"idle": 0.5}}},
            "routes": {"chat": {"targets": ["quiet-m"], "timeout": {"idle": 60}}},
        }
        gateway = gateway_factory(config)
        text = []
        with pytest.raises(openai.APIError, match="stalled"):
            for chunk in sdk_client(gateway).chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
            ):
                text.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
        assert "".join(text) == "".join(pieces(INTENDED)[:20])  # all it sent, then the error
        # the gateway hung up on the stalled upstream (it would wait forever otherwise)
        assert stalling.gone.wait(10)
        row = the_row(gateway, tmp_path)
    assert row.outcome == "stream_failed"
    assert "stalled" in (row.error or "")


def test_a_pause_shorter_than_idle_is_no_break(gateway_factory, tmp_path) -> None:
    models = {"pauses": {"reply": INTENDED, "stall_after": 5, "stall_for": 0.3}}
    route = {"targets": ["pauses"], "timeout": {"idle": 5}}
    gateway = gateway_factory(sim_config(models, {"chat": route}))
    assert ask_openai(gateway) == INTENDED
    row = the_row(gateway, tmp_path)
    assert row.outcome == "ok" and row.attempts == []
