"""The shape of an OpenAI Chat Completions request's structured fields: messages (content
parts, tool calls), tools, tool_choice and response_format.

The internal Request keeps these fields in OpenAI's shape, and every upstream encoder, the
token counter and the capability filter read them. Checking their types here, once, while
decoding, is what lets all of those trust them: a wrong type is a 400 naming the field
(`messages[1].tool_calls[0].function.arguments`), never a crash in a translation to another
provider after the request was accepted. Client JSON schemas are checked by json_schema.
Only what someone reads is checked; unknown part, tool and tool_choice types pass through
to OpenAI-compatible upstreams, which know them."""

from __future__ import annotations

from typing import Any

from turnout.dialects.errors import InvalidRequest, check_schema

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
_TOOL_CHOICES = ("none", "auto", "required")
_FORMATS = ("text", "json_object", "json_schema")
# content part type -> its field, and what that field must hold
_PART_FIELDS: dict[str, tuple[str, type | tuple[type, ...], str]] = {
    "text": ("text", str, "a string"),
    "input_text": ("text", str, "a string"),
    "refusal": ("refusal", str, "a string"),
    "image_url": ("image_url", (dict, str), "an object with a url"),
    "input_audio": ("input_audio", dict, "an object"),
    "file": ("file", dict, "an object"),
}


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{path}' must be an object", path)
    return value


def _array(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequest(f"'{path}' must be an array", path)
    return value


def _string(container: dict[str, Any], name: str, path: str, required: bool = False) -> None:
    value = container.get(name)
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value):
        what = "a non-empty string" if required else "a string"
        raise InvalidRequest(f"'{path}.{name}' must be {what}", f"{path}.{name}")


def _content(content: Any, path: str) -> None:
    """A string, null, or an array of typed parts."""
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"'{path}' must be a string or an array of content parts", path)
    for j, part in enumerate(content):
        where = f"{path}[{j}]"
        part = _object(part, where)
        kind = part.get("type")
        if not isinstance(kind, str):
            raise InvalidRequest(f"'{where}.type' is required: a string", f"{where}.type")
        field = _PART_FIELDS.get(kind)
        if field is None:
            continue
        name, types, what = field
        value = part.get(name)
        if not isinstance(value, types):
            raise InvalidRequest(f"'{where}.{name}' must be {what}", f"{where}.{name}")
        if name == "image_url" and isinstance(value, dict):
            _string(value, "url", f"{where}.image_url", required=True)


def _tool_calls(calls: Any, path: str) -> None:
    for k, call in enumerate(_array(calls, path)):
        where = f"{path}[{k}]"
        call = _object(call, where)
        _string(call, "id", where)
        _string(call, "type", where)
        if call.get("type", "function") != "function" and call.get("function") is None:
            continue  # custom tool calls: OpenAI's own, passed through
        function = _object(call.get("function"), f"{where}.function")
        _string(function, "name", f"{where}.function", required=True)
        # OpenAI takes the arguments as JSON text only; an object here is a client bug
        _string(function, "arguments", f"{where}.function")


def messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The checked `messages` array."""
    items = body.get("messages")
    if items is None:
        raise InvalidRequest("'messages' is a required property", "messages")
    if not isinstance(items, list) or not items:
        raise InvalidRequest("'messages' must be a non-empty array", "messages")
    for i, message in enumerate(items):
        if type(message) is dict and len(message) == 2 and type(message.get("content")) is str:
            role = message.get("role")
            if type(role) is str and role in ROLES:
                continue  # the usual message, {role, content: text}: nothing more to check
        path = f"messages[{i}]"
        message = _object(message, path)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidRequest(
                f"{path}.role must be one of {', '.join(sorted(ROLES))}", f"{path}.role"
            )
        _content(message.get("content"), f"{path}.content")
        _string(message, "name", path)
        _string(message, "tool_call_id", path)
        if message.get("tool_calls") is not None:
            _tool_calls(message["tool_calls"], f"{path}.tool_calls")
    return items


def tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The checked `tools`, their parameter schemas included (None for none)."""
    items = body.get("tools")
    if items is None:
        return None
    for i, tool in enumerate(_array(items, "tools")):
        path = f"tools[{i}]"
        tool = _object(tool, path)
        _string(tool, "type", path)
        if tool.get("type", "function") != "function" and tool.get("function") is None:
            continue  # hosted and custom tools: only OpenAI upstreams take them
        function = _object(tool.get("function"), f"{path}.function")
        _string(function, "name", f"{path}.function", required=True)
        _string(function, "description", f"{path}.function")
        if function.get("parameters") is not None:
            check_schema(function["parameters"], f"{path}.function.parameters")
        if function.get("strict") is not None and not isinstance(function["strict"], bool):
            where = f"{path}.function.strict"
            raise InvalidRequest(f"'{where}' must be a boolean", where)
    return items or None


def tool_choice(body: dict[str, Any]) -> Any:
    """`none`, `auto`, `required`, or an object naming a function (or allowed tools)."""
    choice = body.get("tool_choice")
    if choice is None or choice in _TOOL_CHOICES:
        return choice
    if not isinstance(choice, dict):
        raise InvalidRequest(
            "'tool_choice' must be 'none', 'auto', 'required' or an object", "tool_choice"
        )
    _string(choice, "type", "tool_choice", required=True)
    if choice["type"] == "function":
        function = _object(choice.get("function"), "tool_choice.function")
        _string(function, "name", "tool_choice.function", required=True)
    elif choice["type"] == "allowed_tools":
        allowed = _object(choice.get("allowed_tools"), "tool_choice.allowed_tools")
        _string(allowed, "mode", "tool_choice.allowed_tools")
        listed = _array(allowed.get("tools"), "tool_choice.allowed_tools.tools")
        for k, tool in enumerate(listed):
            where = f"tool_choice.allowed_tools.tools[{k}]"
            tool = _object(tool, where)
            if tool.get("function") is not None:
                _object(tool["function"], f"{where}.function")
    return choice


def response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """text, json_object or json_schema; a json_schema's schema is checked (never fetched)."""
    value = body.get("response_format")
    if value is None:
        return None
    value = _object(value, "response_format")
    if value.get("type") not in _FORMATS:
        raise InvalidRequest(
            f"'response_format.type' must be one of {', '.join(_FORMATS)}", "response_format.type"
        )
    if value["type"] == "json_schema":
        spec = _object(value.get("json_schema"), "response_format.json_schema")
        _string(spec, "name", "response_format.json_schema")
        _string(spec, "description", "response_format.json_schema")
        if spec.get("schema") is not None:
            check_schema(spec["schema"], "response_format.json_schema.schema")
    return value
