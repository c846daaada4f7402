"""The Responses API's objects: the `response` envelope, its output items and its usage.
Pure builders shared by the whole answer (ingress.encode_response) and the stream encoder,
so a streamed answer's `response.completed` holds exactly what a whole answer would."""

from __future__ import annotations

import time
import uuid
from typing import Any

from turnout.model import Response, ToolCall, Usage

Json = dict[str, Any]

# chat finish reasons that end a response early, and the reason the Responses API gives
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    """An id in the Responses API's style: resp_..., msg_..., fc_..., rs_..."""
    return f"{prefix}_{uuid.uuid4().hex}"


def usage(value: Usage) -> Json:
    out: Json = {
        "input_tokens": value.prompt_tokens,
        "input_tokens_details": {"cached_tokens": value.cached_tokens},
        "output_tokens": value.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": value.reasoning_tokens},
        "total_tokens": value.total_tokens,
    }
    if value.cost is not None:
        out["cost"] = value.cost  # USD, turnout's own figure, as on chat completions
    return out


def incomplete_reason(finish_reason: str | None) -> str | None:
    """Why the response is incomplete (None: it completed)."""
    return _INCOMPLETE.get(finish_reason or "")


def output_text(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, content: list[Json], status: str) -> Json:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> Json:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def reasoning_text(text: str) -> Json:
    return {"type": "reasoning_text", "text": text}


def reasoning_item(item_id: str, content: list[Json], status: str) -> Json:
    """The upstream's reasoning as it came: raw reasoning text (`content`), not a summary."""
    return {"id": item_id, "type": "reasoning", "status": status, "summary": [], "content": content}


def envelope(
    response_id: str,
    created: float,
    model: str,
    status: str,
    output: list[Json],
    answer_usage: Usage | None,
    *,
    incomplete: str | None = None,
    error: Json | None = None,
) -> Json:
    """The `response` object. Request parameters are not echoed back (the core answers with
    the response alone): the fields the SDK types require get neutral values."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": None,
        "max_output_tokens": None,
        "metadata": {},
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,  # turnout keeps nothing: there is nothing to retrieve or continue
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "usage": usage(answer_usage) if answer_usage is not None else None,
        "user": None,
    }


def _call_item(call: ToolCall) -> Json:
    return function_call_item(new_id("fc"), call.id, call.name, call.arguments, "completed")


def response_object(response: Response, model: str) -> Json:
    """A whole answer as a `response`: reasoning, then the message, then the function calls
    (the order a chat answer implies)."""
    incomplete = incomplete_reason(response.finish_reason)
    status = "incomplete" if incomplete else "completed"
    output: list[Json] = []
    if response.reasoning:
        output.append(reasoning_item(new_id("rs"), [reasoning_text(response.reasoning)], status))
    if response.content or not response.tool_calls:
        text = [output_text(response.content or "")]
        output.append(message_item(new_id("msg"), text, status))
    output.extend(_call_item(call) for call in response.tool_calls)
    created = float(response.created or time.time())
    return envelope(
        new_id("resp"),
        created,
        model,
        status,
        output,
        response.usage,
        incomplete=incomplete,
    )
