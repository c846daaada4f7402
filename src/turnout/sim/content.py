"""What a simulated model says: reply tokens, JSON-mode objects and tool-call arguments. Pure
functions, no randomness. (Prompt tokens: the gateway's own estimate, model/tokens.py.)"""

from __future__ import annotations

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
    """A value that satisfies the common parts of a JSON schema (type, enum, const, required)."""
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
    for key in ("anyOf", "oneOf", "allOf"):
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
        count = max(int(schema.get("minItems", 1)), 1)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        return [example_value(schema.get("items"), root, depth + 1) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", min(1, schema.get("maximum", 1))))
    if kind == "number":
        return float(schema.get("minimum", min(1.0, schema.get("maximum", 1.0))))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "sim".ljust(int(schema.get("minLength", 0)), "m")


def example_object(
    schema: dict[str, Any], root: dict[str, Any] | None = None, depth: int = 0
) -> dict[str, Any]:
    """An object with every required property filled (OpenAI strict schemas require all)."""
    root = schema if root is None else root
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    names = required if isinstance(required, list) else []
    return {
        name: example_value(properties.get(name, {"type": "string"}), root, depth + 1)
        for name in names
        if isinstance(name, str)
    }


def json_reply(response_format: dict[str, Any], reply: str, fields_limit: int | None = None) -> str:
    """The JSON text a model in JSON mode answers with. A `fields_limit` models one that
    copes with small objects only: past that many fields, the rest are left out."""
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            value = example_value(schema)
            if isinstance(value, dict) and fields_limit is not None:
                value = dict(list(value.items())[:fields_limit])
            return orjson.dumps(value).decode()
    return orjson.dumps({"reply": reply}).decode()


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
