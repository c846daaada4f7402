"""Anthropic extended thinking with its signatures, end to end (issue 13, item 5): an
Anthropic client continuing a turn sends the thinking blocks back, and Anthropic refuses them
unsigned ("must start with a thinking block" once tools are involved). Recorded Anthropic
traffic replayed behind a real gateway process, driven by the anthropic SDK."""

from __future__ import annotations

import anthropic
import pytest
import yaml

from tests.upstreams import SIM_ANTHROPIC_ENV, CassetteUpstream, serve_app
from tests.vectors import vectors_dir

THINKING = {"type": "enabled", "budget_tokens": 1024}


def _cassette(name: str) -> list[dict]:
    path = vectors_dir() / "anthropic" / name
    return yaml.safe_load(path.read_text())["interactions"]


def _gateway(gateway_factory, port: int):
    config = {
        "providers": {
            "claude": {
                "kind": "anthropic",
                "base_url": f"http://127.0.0.1:{port}",
                "api_key": "${SIM_ANTHROPIC_KEY}",
            }
        },
        "models": {"sonnet": {"provider": "claude", "model": "claude-3-7-sonnet-latest"}},
        "routes": {"chat": {"targets": ["sonnet"]}},
    }
    gateway = gateway_factory(config, env=SIM_ANTHROPIC_ENV)
    return anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)


def _recorded_signatures(interaction: dict) -> list[str]:
    response = interaction["response"]
    if "parsed_body" in response:
        return [b["signature"] for b in response["parsed_body"]["content"] if "signature" in b]
    signatures = []
    for line in response["body"]["string"].splitlines():
        if line.startswith("data: ") and '"signature_delta"' in line:
            signatures.append(yaml.safe_load(line[6:])["delta"]["signature"])
    return signatures


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_thinking_signatures_go_to_the_client_and_back_upstream(gateway_factory, stream) -> None:
    name = "test_anthropic_model_thinking_part" + ("_stream" if stream else "") + ".yaml"
    interactions = _cassette(name)
    upstream = CassetteUpstream(interactions)
    question = [{"role": "user", "content": "How do I cross the street?"}]
    with serve_app(upstream.app()) as port:
        client = _gateway(gateway_factory, port)
        if stream:
            with client.messages.stream(
                model="chat", max_tokens=2048, thinking=THINKING, messages=question
            ) as events:
                first = events.get_final_message()
        else:
            first = client.messages.create(
                model="chat", max_tokens=2048, thinking=THINKING, messages=question
            )
        blocks = [b for b in first.content if b.type == "thinking"]
        assert [b.signature for b in blocks] == _recorded_signatures(interactions[0])
        assert blocks[0].thinking  # the reasoning text came too

        # the client continues the turn with the answer as it got it
        follow_up = [
            *question,
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": "And at night?"},
        ]
        if stream:  # (the recording's second answer is a stream too)
            with client.messages.stream(
                model="chat", max_tokens=2048, thinking=THINKING, messages=follow_up
            ) as events:
                events.get_final_message()
        else:
            client.messages.create(
                model="chat", max_tokens=2048, thinking=THINKING, messages=follow_up
            )
    sent = upstream.bodies[1]["messages"][1]["content"]
    thinking = [b for b in sent if b.get("type") == "thinking"]
    assert [b["signature"] for b in thinking] == _recorded_signatures(interactions[0])
    assert sent[0]["type"] == "thinking"  # the assistant turn still starts with it
