"""Planning one successful answer from a request: what is said, as which pieces, and why it
stops. No I/O: app.py paces and sends what this decides."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from turnout.model import Request
from turnout.model.tokens import estimate_prompt_tokens
from turnout.sim import wire
from turnout.sim.content import (
    json_reply,
    malformed,
    pick_tool,
    split_pieces,
    split_reply,
    tool_arguments,
    tool_result_reply,
    trailing_tool_results,
)


def forces_tool(tool_choice: Any) -> bool:
    """A tool_choice that leaves the model no choice but to call a tool."""
    return tool_choice == "required" or isinstance(tool_choice, dict)


def wants_json(body: dict[str, Any]) -> bool:
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    )


@dataclass(slots=True)
class Answer:
    pieces: list[str]  # one per completion token; content text or tool-call argument fragments
    finish_reason: str
    prompt_tokens: int
    tool_name: str | None = None
    tool_call_id: str | None = None

    def usage(self) -> dict[str, Any]:
        return wire.usage(self.prompt_tokens, len(self.pieces))

    def message(self) -> dict[str, Any]:
        text = "".join(self.pieces)
        if self.tool_name is not None:
            call = wire.tool_call(self.tool_call_id or "call_sim", self.tool_name, text)
            return {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
        return {"role": "assistant", "content": text, "refusal": None}

    def chunks(self, encoder: wire.ChunkEncoder, include_usage: bool) -> list[tuple[int, bytes]]:
        """(token slot, SSE bytes) for each event; the slot says when it is due."""
        return list(self._chunks(encoder, include_usage))

    def _chunks(
        self, encoder: wire.ChunkEncoder, include_usage: bool
    ) -> Iterator[tuple[int, bytes]]:
        if self.tool_name is not None:
            # OpenAI's first tool chunk names the call; later ones carry argument fragments
            call = {
                "index": 0,
                "id": self.tool_call_id,
                "type": "function",
                "function": {"name": self.tool_name, "arguments": ""},
            }
            first = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
            yield 0, encoder.delta(first)
            for slot, piece in enumerate(self.pieces):
                yield slot, encoder.arguments(piece)
        else:
            yield 0, encoder.delta({"role": "assistant", "content": "", "refusal": None})
            for slot, piece in enumerate(self.pieces):
                yield slot, encoder.content(piece)
        last = max(len(self.pieces) - 1, 0)
        yield last, encoder.delta({}, self.finish_reason)
        if include_usage:
            yield last, encoder.usage(self.usage())
        yield last, wire.DONE


def plan_answer(
    body: dict[str, Any],
    tokens: list[str],
    reply: str,
    broken: bool,
    serial: int,
    fields_limit: int | None = None,
) -> Answer:
    """`tokens` is the behaviour's reply already split; `broken` asks for malformed JSON.

    Like a model in an agent loop: once the conversation ends with tool results, it answers
    (in text, or JSON in JSON mode) instead of calling a tool again, unless tool_choice
    forces a call; so an SDK's function-calling loop ends after one round trip."""
    messages = body.get("messages")
    tools = body.get("tools")
    prompt = Request(
        model="",
        messages=messages if isinstance(messages, list) else [],
        tools=tools if isinstance(tools, list) else None,
    )
    prompt_tokens = estimate_prompt_tokens(prompt)
    results = trailing_tool_results(messages)
    tool = pick_tool(body.get("tools"), body.get("tool_choice"))
    if results and not forces_tool(body.get("tool_choice")):
        tool = None
    if tool is not None:
        arguments = tool_arguments(tool)
        pieces = split_pieces(malformed(arguments) if broken else arguments)
        answer = Answer(pieces, "tool_calls", prompt_tokens, str(tool.get("name", "")))
        answer.tool_call_id = f"call_sim{serial:08d}"
    elif wants_json(body):
        text = json_reply(body["response_format"], reply, fields_limit, messages)
        answer = Answer(split_pieces(malformed(text) if broken else text), "stop", prompt_tokens)
    elif results:
        answer = Answer(split_reply(tool_result_reply(results)), "stop", prompt_tokens)
    else:
        answer = Answer(tokens, "stop", prompt_tokens)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(answer.pieces):
        answer.pieces = answer.pieces[:limit]
        answer.finish_reason = "length"
    return answer
