"""Messages, tools and tool_choice between Anthropic's Messages shape and the internal shape
(OpenAI Chat Completions). Both directions live here, each the other's inverse where the
shapes allow; the differences are deliberate and listed in the functions' docstrings.

What the internal shape cannot hold (thinking blocks and their signatures, cache_control,
server tools and their result blocks, documents, top-level fields turnout does not
interpret) rides along in AnthropicRequest.native: an Anthropic upstream sends it as the
client wrote it, other upstreams never see it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from turnout.dialects.errors import InvalidRequest, check_schema
from turnout.model import Request

Json = dict[str, Any]


@dataclass(slots=True)
class Native:
    """An Anthropic client's own fields, for an Anthropic upstream."""

    fields: Json  # top-level fields turnout does not interpret: thinking, top_k, mcp_servers...
    system: Any  # the client's `system`, None when it sent none
    messages: list[Json]  # the client's messages (minus thinking blocks turnout itself made)
    tools: list[Json] | None  # the client's tools, server tools and cache_control included
    # what the Request held right after decoding: while it still does, the client's own
    # fields above are sent instead of a translation of the Request's
    decoded_messages: list[Json]
    decoded_tools: list[Json] | None

    def messages_unchanged(self, request: Request) -> bool:
        # a shallow copy was kept: unchanged messages compare by identity, cheaply
        return request.messages == self.decoded_messages

    def tools_unchanged(self, request: Request) -> bool:
        return request.tools == self.decoded_tools


@dataclass(slots=True)
class AnthropicRequest(Request):
    """A Request decoded from an Anthropic client: the internal fields, plus `native`."""

    native: Native | None = None


# --- small shared pieces ------------------------------------------------------------------------

_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def tool_id(value: Any) -> str:
    """Anthropic accepts tool ids of [A-Za-z0-9_-] only; other providers' ids may hold more
    (Kimi's `functions.get_weather:0`). Applied alike to calls and results, so they still pair."""
    return _BAD_ID_CHARS.sub("_", str(value or ""))


def tool_input(arguments: str | None) -> Json:
    """A call's JSON arguments as Anthropic's `input` object ({} for text that is not one)."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def image_block(url: str) -> Json | None:
    """An `image_url` URL as an Anthropic image block: data URLs inline, http(s) by URL."""
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media_type, _, encoding = head[len("data:") :].partition(";")
        if encoding != "base64" or not data:
            return None
        source = {"type": "base64", "media_type": media_type or "image/png", "data": data}
        return {"type": "image", "source": source}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    return None


def image_url(source: Any) -> str | None:
    """An Anthropic image source as an `image_url` URL (None for file ids: no URL exists)."""
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64":
        return f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data') or ''}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    return None


# --- Anthropic -> internal (ingress: validates, raising InvalidRequest as Anthropic words it) ---


def _invalid(path: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {problem}", path)


def _field(block: Json, name: str, kind: type, path: str) -> Any:
    value = block.get(name)
    if value is None:
        raise _invalid(f"{path}.{name}", "Field required")
    if not isinstance(value, kind):
        raise _invalid(f"{path}.{name}", f"Input should be a valid {_KIND_NAMES[kind]}")
    return value


_KIND_NAMES: dict[type, str] = {str: "string", dict: "dictionary", list: "list"}


def _blocks(content: Any, path: str) -> str | list[Json]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(path, "Input should be a valid string or a valid list")
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            raise _invalid(f"{path}.{j}", "Input should be a valid dictionary")
        _field(block, "type", str, f"{path}.{j}")
    return content


def _text_parts(blocks: list[Json], path: str) -> list[Json]:
    """Text blocks as OpenAI text parts; other blocks are left out (see the callers)."""
    parts = []
    for j, block in enumerate(blocks):
        if block["type"] == "text":
            parts.append({"type": "text", "text": _field(block, "text", str, f"{path}.{j}")})
    return parts


def system_from_anthropic(system: Any) -> str | list[Json]:
    content = _blocks(system, "system")
    return content if isinstance(content, str) else _text_parts(content, "system")


def _part(block: Json, path: str) -> Json | None:
    """A text or image block as an OpenAI content part (None for other blocks)."""
    if block["type"] == "text":
        return {"type": "text", "text": _field(block, "text", str, path)}
    if block["type"] == "image":
        url = image_url(_field(block, "source", dict, path))
        if url is not None:
            return {"type": "image_url", "image_url": {"url": url}}
    return None


def _parts(blocks: list[Json], path: str) -> list[Json]:
    parts = (_part(block, f"{path}.{j}") for j, block in enumerate(blocks))
    return [part for part in parts if part is not None]


def _user(content: str | list[Json], path: str) -> list[Json]:
    """One Anthropic user turn -> OpenAI `tool` messages for its tool results, then a user
    message with the rest. Documents and other blocks with no OpenAI part are left out."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[Json] = []
    parts: list[Json] = []
    for j, block in enumerate(content):
        where = f"{path}.{j}"
        if block["type"] != "tool_result":
            part = _part(block, where)
            if part is not None:
                parts.append(part)
            continue
        call_id = _field(block, "tool_use_id", str, where)
        result = block.get("content")
        result = _blocks("" if result is None else result, f"{where}.content")
        # is_error has no OpenAI counterpart: the result's own text has to say so
        out.append(
            {
                "role": "tool",
                "tool_call_id": call_id,
                "content": result
                if isinstance(result, str)
                else _parts(result, f"{where}.content"),
            }
        )
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant(content: str | list[Json], path: str) -> Json:
    """Text blocks joined into one string (what every OpenAI-compatible host takes), tool_use
    blocks as tool_calls. Thinking blocks and server-tool blocks have no OpenAI counterpart."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[Json] = []
    for j, block in enumerate(content):
        where = f"{path}.{j}"
        if block["type"] == "text":
            texts.append(_field(block, "text", str, where))
        elif block["type"] == "tool_use":
            arguments = block.get("input")
            if arguments is not None and not isinstance(arguments, dict):
                raise _invalid(f"{where}.input", "Input should be a valid dictionary")
            calls.append(
                {
                    "id": _field(block, "id", str, where),
                    "type": "function",
                    "function": {
                        "name": _field(block, "name", str, where),
                        "arguments": dumps(arguments if arguments is not None else {}),
                    },
                }
            )
    message: Json = {"role": "assistant", "content": "".join(texts) or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return message


def messages_from_anthropic(system: Any, messages: Any) -> list[Json]:
    """An Anthropic `system` and `messages` -> OpenAI-shaped messages (system first)."""
    if messages is None:
        raise _invalid("messages", "Field required")
    if not isinstance(messages, list):
        raise _invalid("messages", "Input should be a valid list")
    if not messages:
        raise InvalidRequest("messages: at least one message is required", "messages")
    out: list[Json] = []
    if system is not None:
        out.append({"role": "system", "content": system_from_anthropic(system)})
    for i, message in enumerate(messages):
        path = f"messages.{i}"
        if not isinstance(message, dict):
            raise _invalid(path, "Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant", "system"):
            raise _invalid(f"{path}.role", "Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise _invalid(f"{path}.content", "Field required")
        content = _blocks(message["content"], f"{path}.content")
        if role == "user":
            out.extend(_user(content, f"{path}.content"))
        elif role == "assistant":
            out.append(_assistant(content, f"{path}.content"))
        else:
            # mid-conversation system turns (newer API): their text, as an OpenAI system message
            where = f"{path}.content"
            text = content if isinstance(content, str) else _text_parts(content, where)
            if text:
                out.append({"role": "system", "content": text})
    return out


def tools_from_anthropic(tools: Any) -> list[Json] | None:
    """Custom tools -> OpenAI function tools. Server tools (web_search, code_execution...) have
    no OpenAI counterpart: only an Anthropic upstream gets them, through Native."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _invalid("tools", "Input should be a valid list")
    out = []
    for i, tool in enumerate(tools):
        path = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _invalid(path, "Input should be a valid dictionary")
        if tool.get("type") not in (None, "custom"):
            continue
        function: Json = {"name": _field(tool, "name", str, path)}
        if tool.get("description") is not None:
            function["description"] = _field(tool, "description", str, path)
        function["parameters"] = _field(tool, "input_schema", dict, path)
        check_schema(function["parameters"], f"{path}.input_schema")
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out or None


def tool_choice_from_anthropic(choice: Any) -> tuple[Any, bool]:
    """(OpenAI tool_choice, parallel tool calls allowed)."""
    if choice is None:
        return None, True
    if not isinstance(choice, dict):
        raise _invalid("tool_choice", "Input should be a valid dictionary")
    kind = choice.get("type")
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise _invalid("tool_choice.disable_parallel_tool_use", "Input should be a valid boolean")
    parallel = disable is not True
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", parallel
    if kind == "tool":
        name = _field(choice, "name", str, "tool_choice")
        return {"type": "function", "function": {"name": name}}, parallel
    raise _invalid("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")


# --- internal -> Anthropic (upstream: lenient, whatever an OpenAI client sent) -----------------


def _blocks_of(content: Any) -> list[Json]:
    """OpenAI content (a string or parts) as Anthropic blocks: text and images. Empty text is
    left out: Anthropic refuses empty text blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[Json] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and part.get("text"):
            blocks.append({"type": "text", "text": str(part["text"])})
        elif part.get("type") == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            block = image_block(url) if isinstance(url, str) else None
            if block is not None:
                blocks.append(block)
    return blocks


def _content_of(content: Any) -> str | list[Json]:
    """User and tool-result content: a string stays a string, parts become blocks."""
    if isinstance(content, str):
        return content
    return _blocks_of(content)


def _assistant_blocks(message: Json) -> list[Json]:
    blocks = _blocks_of(message.get("content"))
    for call in message.get("tool_calls") or ():
        if not isinstance(call, dict):
            continue
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_id(call.get("id")),
                "name": str(function.get("name") or ""),
                "input": tool_input(function.get("arguments")),
            }
        )
    return blocks


def _merge(turns: list[Json], role: str, content: str | list[Json]) -> None:
    """Anthropic wants user and assistant turns to alternate: same-role neighbours merge."""
    if turns and turns[-1]["role"] == role:
        previous = turns[-1]["content"]
        turns[-1]["content"] = _as_blocks(previous) + _as_blocks(content)
    else:
        turns.append({"role": role, "content": content})


def _as_blocks(content: str | list[Json]) -> list[Json]:
    return _blocks_of(content) if isinstance(content, str) else content


def _system_of(chunks: list[Any]) -> str | list[Json] | None:
    if not chunks:
        return None
    if all(isinstance(chunk, str) for chunk in chunks):
        return "\n\n".join(chunks)
    return [block for chunk in chunks for block in _blocks_of(chunk) if block["type"] == "text"]


def messages_to_anthropic(messages: list[Json]) -> tuple[str | list[Json] | None, list[Json]]:
    """OpenAI-shaped messages -> (Anthropic `system`, `messages`).

    - system and developer messages, wherever they stand, become the top-level `system`
    - tool messages become tool_result blocks in a user turn; consecutive same-role turns
      merge (so several results, and a user message after them, share one turn)
    - assistant text becomes one text block, followed by its tool calls as tool_use blocks
    - legacy `function` messages name no call to answer and are left out, as are empty turns
    """
    system: list[Any] = []
    turns: list[Json] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(message.get("content") or "")
        elif role == "user":
            _merge(turns, "user", _content_of(message.get("content")))
        elif role == "assistant":
            blocks = _assistant_blocks(message)
            if blocks:
                _merge(turns, "assistant", blocks)
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": tool_id(message.get("tool_call_id")),
                "content": _content_of(message.get("content") or ""),
            }
            _merge(turns, "user", [result])
    return _system_of(system), turns


def tools_to_anthropic(tools: list[Json] | None) -> list[Json]:
    out = []
    for tool in tools or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        # a tool without a type is a function, as the other upstream dialects read it
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            continue
        converted: Json = {"name": str(function.get("name") or "")}
        if function.get("description") is not None:
            converted["description"] = function["description"]
        schema = function.get("parameters")
        # Anthropic requires a schema; OpenAI lets a function without parameters leave it out
        converted["input_schema"] = schema if schema else {"type": "object", "properties": {}}
        if isinstance(function.get("strict"), bool):
            converted["strict"] = function["strict"]
        out.append(converted)
    return out


def tool_choice_to_anthropic(choice: Any, parallel: bool = True) -> Json | None:
    """OpenAI tool_choice -> Anthropic's. `parallel=False` (OpenAI's parallel_tool_calls)
    becomes disable_parallel_tool_use."""
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        out: Json = {"type": "tool", "name": name} if name else {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "auto" or not parallel:
        out = {"type": "auto"}
    else:
        return None
    if not parallel:
        out["disable_parallel_tool_use"] = True
    return out
