"""Anthropic extended thinking with its signatures, end to end (issue 13, item 5): an
Anthropic client continuing a turn sends the thinking blocks back, and Anthropic refuses them
unsigned ("must start with a thinking block" once tools are involved). Recorded Anthropic
traffic replayed behind a real gateway process, driven by the anthropic SDK."""

from __future__ import annotations

import json

import anthropic
import pytest
import yaml

from tests.upstreams import SIM_ANTHROPIC_ENV, CassetteUpstream, serve_app
from tests.vectors import cassette

THINKING = {"type": "enabled", "budget_tokens": 1024}


def _cassette(name: str) -> list[dict]:
    path = cassette("anthropic", name)
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
        "models": {
            "sonnet": {
                "provider": "claude",
                "model": "claude-3-7-sonnet-latest",
                "supports": ["tools", "json"],
            }
        },
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


# thinking, text and a tool call; then, sent its result, the answer
TOOL_EXCHANGE = "test_anthropic_tool_with_thinking.yaml"


def _pieces(text: str, count: int = 3) -> list[str]:
    """A text in the few deltas a stream sends it in (the gateway must join them again)."""
    size = max(1, -(-len(text) // count))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _as_stream(interaction: dict) -> dict:
    """A recorded whole answer framed as the stream Anthropic sends for it: same blocks, same
    signature, same usage (the recording has no streamed thinking-plus-tool-use exchange)."""
    message = interaction["response"]["parsed_body"]
    events: list[tuple[str, dict]] = [
        ("message_start", {"message": {**message, "content": [], "stop_reason": None}})
    ]
    for index, block in enumerate(message["content"]):
        kind, deltas = block["type"], []
        if kind == "thinking":
            start = {"type": kind, "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind == "text":
            start = {"type": kind, "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
        else:  # tool_use: its input as JSON text
            start = {**block, "input": {}}
            arguments = _pieces(json.dumps(block["input"]))
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in arguments]
        events.append(("content_block_start", {"index": index, "content_block": start}))
        events += [("content_block_delta", {"index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"index": index}))
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    usage = {"output_tokens": message["usage"]["output_tokens"]}
    events += [("message_delta", {"delta": stop, "usage": usage}), ("message_stop", {})]
    text = "".join(
        f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n" for name, data in events
    )
    body = {"string": text}
    headers = {"content-type": ["text/event-stream; charset=utf-8"]}
    return {**interaction, "response": {"status": {"code": 200}, "headers": headers, "body": body}}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_thinking_with_tool_use_keeps_its_signatures_end_to_end(gateway_factory, stream) -> None:
    """The issue's own case: thinking, then a tool call, then the client sends the tool's
    result with the signed thinking block in front. What reaches the upstream must be what
    Anthropic accepted in the recording, signature and block order included."""
    recorded = _cassette(TOOL_EXCHANGE)
    first_request, second_request = (i["request"]["parsed_body"] for i in recorded)
    upstream = CassetteUpstream([_as_stream(i) for i in recorded] if stream else recorded)
    asked = {k: first_request[k] for k in ("max_tokens", "thinking", "tools", "tool_choice")}
    with serve_app(upstream.app()) as port:
        client = _gateway(gateway_factory, port)
        if stream:
            with client.messages.stream(
                model="chat", messages=first_request["messages"], **asked
            ) as events:
                first = events.get_final_message()
        else:
            first = client.messages.create(
                model="chat", messages=first_request["messages"], **asked
            )
        assert [b.type for b in first.content] == ["thinking", "text", "tool_use"]
        assert first.stop_reason == "tool_use"
        assert [b.signature for b in first.content if b.type == "thinking"] == (
            _recorded_signatures(recorded[0])
        )

        # the client runs the tool and sends its result after the answer as it got it
        tool_result = second_request["messages"][-1]
        follow_up = [
            *first_request["messages"],
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in first.content],
            },
            tool_result,
        ]
        if stream:
            with client.messages.stream(model="chat", messages=follow_up, **asked) as events:
                final = events.get_final_message()
        else:
            final = client.messages.create(model="chat", messages=follow_up, **asked)
        assert "Mexico City" in final.content[0].text

    assert [bool(body.get("stream")) for body in upstream.bodies] == [stream, stream]
    sent = upstream.bodies[1]
    assert sent["messages"] == second_request["messages"]  # as Anthropic accepted them
    assert sent["thinking"] == first_request["thinking"]
    assert [b["type"] for b in sent["messages"][1]["content"]] == ["thinking", "text", "tool_use"]
