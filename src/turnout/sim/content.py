"""What a simulated model says: reply tokens, JSON-mode objects and tool-call arguments. Pure
functions, no randomness. (Prompt tokens: the gateway's own estimate, model/tokens.py.)"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

_WORDISH = re.compile(r"\s*\S+")
_PIECE = 4  # characters per "token" of JSON text: ~4 chars a token, like real tokenizers
_MAX_DEPTH = 8  # recursive schemas must still end


def split_reply(text: str) -> list[str]:
    """Word-ish tokens that join back to `text` (leading whitespace stays with its word)."""
    return _WORDISH.findall(text)


def split_pieces(text: str) -> list[str]:
    """JSON text has no spaces to split on: cut it into short fixed-size pieces instead."""
    return [text[i : i + _PIECE] for i in range(0, len(text), _PIECE)]


def _resolve(root: dict[str, Any], ref: str) -> Any:
    # only local references (#/$defs/X, #/definitions/X): what OpenAI's schemas use
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node


def example_value(schema: Any, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A minimal value valid against the common parts of a JSON schema: type, enum, const,
    required, nested objects and arrays, $ref, string lengths and formats, numeric bounds,
    uniqueItems. (`pattern` is not generated: no model is checked against it here.)"""
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return "sim"
    root = schema if root is None else root
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if isinstance(schema.get("$ref"), str):
        return example_value(_resolve(root, schema["$ref"]), root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        return example_value(_merged(schema, root), root, depth + 1)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            # prefer a non-null option: null fills nothing in
            chosen = next(
                (o for o in options if isinstance(o, dict) and o.get("type") != "null"),
                options[0],
            )
            return example_value(chosen, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        return example_object(schema, root, depth)
    if kind == "array":
        return _example_array(schema, root, depth)
    if kind == "integer":
        return math.ceil(_example_number(schema, 1))  # a fractional minimum rounds up
    if kind == "number":
        return float(_example_number(schema, 1.0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _example_string(schema)


def _merged(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """allOf as one schema: every part's properties and required names together (the parts
    of real schemas add fields to each other; they rarely contradict)."""
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if isinstance(part, dict) and isinstance(part.get("$ref"), str):
            part = _resolve(root, part["$ref"])
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "email": "sim@example.com",
    "uri": "https://example.com/sim",
    "url": "https://example.com/sim",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
}


def _example_string(schema: dict[str, Any]) -> str:
    text = _FORMATS.get(str(schema.get("format")), "sim")
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text = text.ljust(low, "m")
    if isinstance(high, int) and len(text) > high:
        text = text[: max(high, 0)]
    return text


def _example_number(schema: dict[str, Any], preferred: float) -> float:
    """`preferred` (1) moved into [minimum, maximum] and onto multipleOf."""
    value = preferred
    low, high = schema.get("minimum"), schema.get("maximum")
    low_x, high_x = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(low, int | float) and value < low:
        value = low
    if isinstance(low_x, int | float) and not isinstance(low_x, bool) and value <= low_x:
        value = low_x + 1
    if isinstance(high, int | float) and value > high:
        value = high
    if isinstance(high_x, int | float) and not isinstance(high_x, bool) and value >= high_x:
        value = high_x - 1
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and step > 0 and value % step:
        value = step * -(-value // step)  # the next multiple up
    return value


def _example_array(schema: dict[str, Any], root: dict[str, Any], depth: int) -> list[Any]:
    low = schema.get("minItems", 1)
    count = max(int(low) if isinstance(low, int) else 1, 1)
    if isinstance(schema.get("maxItems"), int):
        count = min(count, schema["maxItems"])
    prefix = schema.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    items = [example_value(p, root, depth + 1) for p in prefix[:count]]
    item = example_value(schema.get("items"), root, depth + 1)
    while len(items) < count:
        items.append(_distinct(item, len(items)) if schema.get("uniqueItems") else item)
    return items


def _distinct(value: Any, n: int) -> Any:
    """The n-th of several different items, for uniqueItems."""
    if isinstance(value, bool) or value is None:
        return value  # only two (or one) to choose from: the schema asks the impossible
    if isinstance(value, int | float):
        return value + n
    if isinstance(value, str):
        return f"{value}{n}" if n else value
    return value


def example_object(
    schema: dict[str, Any], root: dict[str, Any] | None = None, depth: int = 0
) -> dict[str, Any]:
    """An object with every required property filled (OpenAI strict schemas require all),
    plus optional ones when minProperties asks for more."""
    root = schema if root is None else root
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    names = [
        name for name in (required if isinstance(required, list) else []) if isinstance(name, str)
    ]
    wanted = schema.get("minProperties")
    if isinstance(wanted, int):
        names += [name for name in properties if name not in names][: max(wanted - len(names), 0)]
    return {
        name: example_value(properties.get(name, {"type": "string"}), root, depth + 1)
        for name in dict.fromkeys(names)
    }


def json_reply(
    response_format: dict[str, Any],
    reply: str,
    fields_limit: int | None = None,
    messages: Any = None,
) -> str:
    """The JSON text a model in JSON mode answers with: an instance of the requested schema;
    for plain JSON mode, the keys the prompt asks for (or `{"reply": reply}` when it names
    none). A `fields_limit` models one that copes with small objects only: past that many
    fields, the rest are left out."""
    value: Any = None
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            value = example_value(schema)
    if value is None:
        value = prompt_object(messages) or {"reply": reply}
    if isinstance(value, dict) and fields_limit is not None:
        value = dict(list(value.items())[:fields_limit])
    return orjson.dumps(value).decode()


# "keys: a, b and c", "with the fields `name` and `age`": after the word, a colon and bare
# names, or quoted names without one (bare words after "keys" are usually just prose)
_KEYS_WORD = re.compile(r"\b(?:keys|fields|properties)\b\s*(:)?", re.IGNORECASE)
_QUOTED_NAME = re.compile(r"\s*[\"'`]([A-Za-z_][\w.-]*)[\"'`]")
_BARE_NAME = re.compile(r"\s*([A-Za-z_][\w-]*)")
_SEPARATOR = re.compile(r"\s*(?:,\s*(?:and\s+|or\s+)?|and\s+|or\s+|/)")


def _names_after(text: str, start: int, bare: bool) -> list[str]:
    names: list[str] = []
    position = start
    while True:
        match = _QUOTED_NAME.match(text, position) or (
            _BARE_NAME.match(text, position) if bare else None
        )
        if match is None:
            return names
        names.append(match.group(1))
        separator = _SEPARATOR.match(text, match.end())
        if separator is None:
            return names
        position = separator.end()


def _json_example(text: str) -> dict[str, Any] | None:
    """The first JSON object written out in the text, e.g. `{"name": "...", "age": 0}`."""
    decoder = json.JSONDecoder()
    for found in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, found.start())
        except ValueError:
            continue
        if isinstance(value, dict) and value:
            return value
    return None


def _prompt_texts(messages: Any) -> list[str]:
    """User texts, latest first, then system/developer texts: where a prompt says what it
    wants."""
    if not isinstance(messages, list):
        return []
    users: list[str] = []
    systems: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        target = users if role == "user" else systems if role in ("system", "developer") else None
        if target is not None:
            target.append(message_text(message.get("content")))
    return [*reversed(users), *systems]


def prompt_object(messages: Any) -> dict[str, Any] | None:
    """The object a prompt asks for in plain JSON mode: its JSON example as given, or the
    keys it names, each with a string value. None when it asks for nothing in particular."""
    for text in _prompt_texts(messages):
        example = _json_example(text)
        if isinstance(example, dict) and isinstance(example.get("properties"), dict):
            value = example_value(example)  # a schema written out: answer an instance of it
            if isinstance(value, dict) and value:
                return value
        elif example is not None:
            return example
        for word in _KEYS_WORD.finditer(text):
            names = _names_after(text, word.end(), bare=word.group(1) is not None)
            if names:
                return {name: "sim" for name in names}
    return None


_JSON_ASKED = re.compile(r"\bJSON object\b", re.IGNORECASE)


def system_asks_for_json(messages: Any) -> bool:
    """Anthropic has no JSON mode: a system prompt asking for a JSON object (the gateway's
    own instruction says "one valid JSON object") is how a client gets one."""
    return isinstance(messages, list) and any(
        isinstance(m, dict)
        and m.get("role") == "system"
        and _JSON_ASKED.search(message_text(m.get("content")))
        for m in messages
    )


def message_text(content: Any) -> str:
    """A message's text, whether a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


_RESULT_CHARS = 120  # of each tool result, quoted back


def trailing_tool_results(messages: Any) -> list[str]:
    """The texts of the tool results that end the conversation (none when it ends otherwise):
    what an agent loop sends back after running the tools the model called."""
    if not isinstance(messages, list):
        return []
    results: list[str] = []
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "tool":
            break
        results.append(" ".join(message_text(message.get("content")).split()))
    return results[::-1]


def tool_result_reply(results: list[str]) -> str:
    """A model's closing sentence once its tools have answered: it uses what they said."""
    quoted = "; ".join(
        text if len(text) <= _RESULT_CHARS else text[: _RESULT_CHARS - 3] + "..."
        for text in results
    )
    subject = "The tool returned" if len(results) == 1 else "The tools returned"
    return f"{subject}: {quoted or '(nothing)'}."


def malformed(text: str) -> str:
    """Broken JSON: the object cut in half, so the closing brace is always missing."""
    return text[: max(1, len(text) // 2)]


def pick_tool(tools: Any, tool_choice: Any) -> dict[str, Any] | None:
    """The function tool the model calls, or None when it should answer in text."""
    if not isinstance(tools, list) or not tools or tool_choice == "none":
        return None
    functions = [
        t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    if not functions:
        return None
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        for function in functions:
            if function.get("name") == wanted:
                return function
    return functions[0]


def tool_arguments(function: dict[str, Any]) -> str:
    parameters = function.get("parameters")
    if not isinstance(parameters, dict):
        return "{}"
    return orjson.dumps(example_object(parameters)).decode()
