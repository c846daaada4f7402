"""A prompt's size without a tokenizer: the one estimate (about four characters a token, plus
each message's overhead) used wherever an exact count would cost too much: rate-limit budget
checks, cost and latency ordering, a stream whose client hung up, the simulator's usage.

The exact count (tiktoken) belongs to routing's context-window filter, which counts the same
texts (`prompt_parts`, one by one).
"""

from __future__ import annotations

from typing import Any

import orjson

from turnout.model.types import Request

CHARS_PER_TOKEN = 4  # English text in the common BPE tokenizers
PER_MESSAGE = 4  # role and separators, as OpenAI counts them


def prompt_text(request: Request) -> str:
    """Everything in the prompt that costs tokens, as one string: message text, tool calls
    and tool definitions. Anything not shaped as expected (a simulator's raw body) is skipped."""
    return "\n".join(prompt_parts(request))


def prompt_parts(request: Request) -> list[str]:
    """The prompt's texts one by one (each message's text parts, each tool call, the tool
    definitions): routing counts and caches them apart, because a conversation resends the
    same earlier messages turn after turn."""
    parts: list[str] = []
    for message in request.messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function: Any = (call.get("function") if isinstance(call, dict) else None) or {}
            if isinstance(function, dict):
                parts.append(str(function.get("name", "")) + str(function.get("arguments", "")))
    if request.tools:
        parts.append(orjson.dumps(request.tools).decode())
    return parts


def estimate_prompt_tokens(request: Request) -> int:
    """About four characters a token, plus each message's overhead: cheap and repeatable."""
    return len(prompt_text(request)) // CHARS_PER_TOKEN + PER_MESSAGE * len(request.messages)
