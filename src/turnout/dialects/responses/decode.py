"""A client's `POST /v1/responses` body -> the internal Request (chat-completions-shaped
messages and tools). Pure; raises InvalidRequest (a 400 in OpenAI's shape naming the field).

Every field of the request is either mapped, checked and refused, or deliberately dropped:
nothing reaches `Request.extra` but `parallel_tool_calls` (a chat field), because the
Responses API's own fields would make a chat-completions upstream refuse the request."""

from __future__ import annotations

from typing import Any

from turnout.dialects.errors import InvalidRequest, check_schema, json_object
from turnout.model import Request

Json = dict[str, Any]

# fields that need state turnout does not keep: a clear 400 rather than a wrong answer
_STATEFUL = {
    "previous_response_id": "turnout keeps no conversation state (every response is "
    "`store: false`): send the whole conversation in `input` instead of "
    "`previous_response_id`",
    "conversation": "turnout keeps no conversations: send the whole conversation in `input`",
    "prompt": "turnout keeps no stored prompts: send the prompt's text as `instructions`",
}
_ROLES = ("user", "assistant", "system", "developer")
_TOOL_CHOICES = ("none", "auto", "required")
_HOSTED = "turnout reaches chat-completions upstreams, which run function tools only"


def _invalid(path: str, problem: str, code: str | None = None) -> InvalidRequest:
    error = InvalidRequest(f"'{path}' {problem}", path)
    error.code = code
    return error


def _object(value: Any, path: str) -> Json:
    if not isinstance(value, dict):
        raise _invalid(path, "must be an object")
    return value


def _string(container: Json, name: str, path: str, *, required: bool = False) -> str | None:
    value = container.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise _invalid(
            f"{path}.{name}", "must be a non-empty string" if required else "must be a string"
        )
    return value


def _type(item: Json, path: str) -> str:
    kind = item.get("type")
    if not isinstance(kind, str):
        raise _invalid(f"{path}.type", "is required: a string")
    return kind


# --- input items -----------------------------------------------------------------------------


def _image(part: Json, path: str) -> Json:
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        problem = "must be a URL or a data URL"
        if part.get("file_id") is not None:
            problem += ": turnout keeps no files, so a `file_id` cannot be read"
        raise _invalid(f"{path}.image_url", problem)
    image: Json = {"url": url}
    detail = part.get("detail")
    if detail is not None:
        if detail not in ("auto", "low", "high", "original"):
            raise _invalid(f"{path}.detail", "must be 'auto', 'low', 'high' or 'original'")
        image["detail"] = "auto" if detail == "original" else detail  # chat has no 'original'
    return {"type": "image_url", "image_url": image}


def _file(part: Json, path: str) -> Json:
    file: Json = {}
    for name in ("file_data", "file_id", "filename"):
        if (value := _string(part, name, path)) is not None:
            file[name] = value
    if "file_data" not in file and "file_id" not in file:
        raise _invalid(
            path, "needs `file_data` (a data URL): chat upstreams cannot fetch `file_url`"
        )
    return {"type": "file", "file": file}


def _parts(content: Any, path: str, *, text_only: bool) -> str | list[Json]:
    """A message's content as chat content: the string itself, or chat parts (text only
    joined into a string for system, developer and assistant messages and tool outputs)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(path, "must be a string or an array of content parts")
    parts: list[Json] = []
    for j, part in enumerate(content):
        where = f"{path}[{j}]"
        part = _object(part, where)
        kind = _type(part, where)
        if kind in ("input_text", "output_text", "text"):
            parts.append(
                {"type": "text", "text": _string(part, "text", where, required=False) or ""}
            )
        elif kind == "refusal":
            parts.append({"type": "text", "text": _string(part, "refusal", where) or ""})
        elif text_only:
            raise _invalid(f"{where}.type", f"'{kind}' cannot go here: only text parts can")
        elif kind == "input_image":
            parts.append(_image(part, where))
        elif kind == "input_file":
            parts.append(_file(part, where))
        else:
            raise _invalid(f"{where}.type", f"'{kind}' is not a content part turnout can send")
    if text_only:
        return "".join(p["text"] for p in parts)
    return parts


def _message(item: Json, path: str) -> Json:
    role = item.get("role")
    if role not in _ROLES:
        raise _invalid(f"{path}.role", f"must be one of {', '.join(_ROLES)}")
    content = item.get("content")
    if content is None:
        raise _invalid(f"{path}.content", "is required")
    return {"role": role, "content": _parts(content, f"{path}.content", text_only=role != "user")}


def _function_call(item: Json, path: str) -> Json:
    name = _string(item, "name", path, required=True)
    call_id = _string(item, "call_id", path, required=True)
    arguments = _string(item, "arguments", path) or ""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_output(item: Json, path: str) -> Json:
    call_id = _string(item, "call_id", path, required=True)
    output = item.get("output")
    if output is None:
        raise _invalid(f"{path}.output", "is required")
    content = _parts(output, f"{path}.output", text_only=True)
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def _append_call(messages: list[Json], call: Json) -> None:
    """A function call joins the assistant message just before it (chat puts a turn's calls
    on one message), or starts one."""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def messages(body: Json) -> list[Json]:
    """`instructions` and `input` as chat messages."""
    out: list[Json] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _invalid("instructions", "must be a string")
        out.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        return [*out, {"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise _invalid("input", "is required: a string or a non-empty array of input items")
    for i, item in enumerate(items):
        path = f"input[{i}]"
        item = _object(item, path)
        kind = item.get("type", "message")
        if kind == "message":
            message = _message(item, path)
            last = out[-1] if out else None
            if (
                message["role"] == "assistant"
                and last is not None
                and last["role"] == "assistant"
                and last["content"] is None
            ):
                last["content"] = message["content"]  # text after its own calls: one turn
            else:
                out.append(message)
        elif kind == "function_call":
            _append_call(out, _function_call(item, path))
        elif kind == "function_call_output":
            out.append(_tool_output(item, path))
        elif kind == "reasoning":
            continue  # no chat upstream takes reasoning items back: dropped
        elif kind == "item_reference":
            raise _invalid(
                f"{path}.type", f"'item_reference' needs stored items: {_STATEFUL['conversation']}"
            )
        elif isinstance(kind, str):
            raise _invalid(f"{path}.type", f"'{kind}' is not supported: {_HOSTED}")
        else:
            raise _invalid(f"{path}.type", "must be a string")
    if not any(m["role"] != "system" for m in out):
        raise _invalid("input", "has nothing a model can answer (only instructions or reasoning)")
    return out


# --- tools and formats -----------------------------------------------------------------------


def tools(body: Json) -> list[Json] | None:
    """Function tools as chat tools; any other tool type is refused by name."""
    items = body.get("tools")
    if items is None:
        return None
    if not isinstance(items, list):
        raise _invalid("tools", "must be an array")
    out: list[Json] = []
    for i, tool in enumerate(items):
        path = f"tools[{i}]"
        tool = _object(tool, path)
        kind = _type(tool, path)
        if kind != "function":
            raise _invalid(f"{path}.type", f"'{kind}' is not supported: {_HOSTED}")
        function: Json = {"name": _string(tool, "name", path, required=True)}
        if (description := _string(tool, "description", path)) is not None:
            function["description"] = description
        parameters = tool.get("parameters")
        if parameters is not None:
            check_schema(parameters, f"{path}.parameters")
            function["parameters"] = parameters
        strict = tool.get("strict")
        if strict is not None:
            if not isinstance(strict, bool):
                raise _invalid(f"{path}.strict", "must be a boolean")
            function["strict"] = strict
        out.append({"type": "function", "function": function})
    return out or None


def _named(choice: Json, path: str) -> Json:
    if choice.get("type") != "function":
        raise _invalid(f"{path}.type", f"'{choice.get('type')}' is not supported: {_HOSTED}")
    return {"type": "function", "function": {"name": _string(choice, "name", path, required=True)}}


def tool_choice(body: Json) -> Any:
    """none/auto/required, a named function, or allowed_tools: in chat's shape."""
    choice = body.get("tool_choice")
    if choice is None or choice in _TOOL_CHOICES:
        return choice
    if not isinstance(choice, dict):
        raise _invalid("tool_choice", "must be 'none', 'auto', 'required' or an object")
    if choice.get("type") != "allowed_tools":
        return _named(choice, "tool_choice")
    mode = choice.get("mode")
    if mode not in ("auto", "required"):
        raise _invalid("tool_choice.mode", "must be 'auto' or 'required'")
    listed = choice.get("tools")
    if not isinstance(listed, list):
        raise _invalid("tool_choice.tools", "must be an array")
    allowed = [
        _named(_object(t, f"tool_choice.tools[{k}]"), f"tool_choice.tools[{k}]")
        for k, t in enumerate(listed)
    ]
    return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": allowed}}


def response_format(body: Json) -> Json | None:
    """`text.format` as chat's response_format, so the JSON guard checks the answer."""
    text = body.get("text")
    if text is None:
        return None
    fmt = _object(text, "text").get("format")
    if fmt is None:
        return None
    fmt = _object(fmt, "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise _invalid("text.format.type", "must be one of text, json_object, json_schema")
    spec: Json = {"name": _string(fmt, "name", "text.format", required=True)}
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise _invalid("text.format.schema", "is required: a JSON Schema object")
    check_schema(schema, "text.format.schema")
    spec["schema"] = schema
    if (description := _string(fmt, "description", "text.format")) is not None:
        spec["description"] = description
    strict = fmt.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise _invalid("text.format.strict", "must be a boolean")
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}


# --- scalars ---------------------------------------------------------------------------------


def _number(body: Json, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _invalid(name, f"must be a number between {low} and {high}")
    return float(value)


def _boolean(body: Json, name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise _invalid(name, "must be a boolean")
    return value


def _max_output_tokens(body: Json) -> int | None:
    value = body.get("max_output_tokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid("max_output_tokens", "must be a positive integer")
    return value


def _stateless(body: Json) -> None:
    for name, why in _STATEFUL.items():
        if body.get(name) is not None:
            raise _invalid(name, f"is not supported: {why}", "unsupported_parameter")
    if body.get("background"):
        raise _invalid(
            "background",
            "is not supported: turnout keeps no responses to poll; stream instead",
            "unsupported_parameter",
        )
    _boolean(body, "store")


def decode_request(raw: bytes) -> Request:
    """A client's /v1/responses body -> Request. Raises InvalidRequest."""
    body = json_object(
        raw, "the request body is not valid JSON", "the request body must be a JSON object"
    )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "is required: name a route or a model")
    _stateless(body)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid("user", "must be a string")
    chat_tools = tools(body)
    parallel = _boolean(body, "parallel_tool_calls")
    return Request(
        model=model,
        messages=messages(body),
        stream=bool(_boolean(body, "stream")),
        include_usage=True,  # response.completed always carries the usage
        max_tokens=_max_output_tokens(body),
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        tools=chat_tools,
        tool_choice=tool_choice(body),
        response_format=response_format(body),
        user=user,
        # chat refuses parallel_tool_calls without tools
        extra={"parallel_tool_calls": parallel} if chat_tools and parallel is not None else {},
    )
