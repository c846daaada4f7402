"""Hypothesis strategies for the fuzz suite (tests/test_fuzz.py): hostile JSON values, a
mutator that breaks a valid document one path at a time, request bodies for both ingress
dialects, hostile headers, and the recorded provider traffic the decoder properties start from.

Run size: `TURNOUT_FUZZ_EXAMPLES` (examples per property; the default keeps the file under
~90 s on two cores) and `TURNOUT_FUZZ_RANDOM=1` (a fresh random seed per run, for longer hunts;
the default is derandomized so CI is deterministic).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# generated cases per property, printed by the terminal-summary hook in tests/conftest.py
CASES: Counter[str] = Counter()
# statuses the gateway answered, per ingress property: evidence the inputs reach past parsing
STATUSES: defaultdict[str, Counter[int]] = defaultdict(Counter)

RANDOM = os.environ.get("TURNOUT_FUZZ_RANDOM") == "1"


def fuzz_settings(default_examples: int) -> settings:
    """Deterministic unless TURNOUT_FUZZ_RANDOM=1; TURNOUT_FUZZ_EXAMPLES overrides the size."""
    examples = int(os.environ.get("TURNOUT_FUZZ_EXAMPLES") or default_examples)
    return settings(
        derandomize=not RANDOM,
        database=None,
        deadline=None,
        max_examples=examples,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


def fuzz_timeout(default_examples: int, seconds_per_example: float) -> float:
    """A pytest-timeout for one property that grows with TURNOUT_FUZZ_EXAMPLES."""
    examples = int(os.environ.get("TURNOUT_FUZZ_EXAMPLES") or default_examples)
    return max(300.0, 60 + examples * seconds_per_example)


# --- hostile JSON values --------------------------------------------------------------------------

ODD_STRINGS = (
    "",
    "\x00",
    "a\x00b",
    "\ud800",  # lone surrogates: encoded as raw bytes, they are not UTF-8
    "\udfff",
    "x\udc80y",
    "\u202e\u200b\ufeff",
    "💥" * 3,
    "\r\n",
    "${OPENAI_API_KEY}",
    "data: [DONE]\n\n",
    "null",
    "chat",
    "x" * 70_000,
)
EXTREME_NUMBERS = (
    0,
    -1,
    2**31,
    2**53 + 1,
    2**63,
    -(2**63) - 1,
    2**64,
    10**400,
    -0.0,
    1e-320,
    1.7976931348623157e308,
    -1e308,
    0.5,
    True,
    False,
)


def odd_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ODD_STRINGS),
        st.text(max_size=20),
        st.text(st.characters(categories=["Cs"]) | st.characters(), max_size=8),
    )


def json_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from(EXTREME_NUMBERS),
        st.floats(allow_nan=False, allow_infinity=False),
        odd_text(),
    )


def json_values(max_leaves: int = 10) -> st.SearchStrategy[Any]:
    return st.recursive(
        json_scalars(),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(odd_text(), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


# a deep nesting cannot be built as Python objects (json.dumps would recurse): it is a marker
# string that `to_bytes` replaces with the brackets themselves
_DEEP = "\x00deep:{}:{}\x00"


def deep_marker() -> st.SearchStrategy[str]:
    return st.builds(
        _DEEP.format,
        st.sampled_from([64, 600, 2_000, 100_000]),
        st.sampled_from(["list", "object"]),
    )


_DEEP_IN_JSON = re.compile(r'"\\u0000deep:(\d+):(list|object)\\u0000"')


def _brackets(match: re.Match[str]) -> str:
    depth = int(match.group(1))
    if match.group(2) == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def _expand_deep(text: str) -> str:
    return _DEEP_IN_JSON.sub(_brackets, text)


def to_bytes(value: Any, ascii_only: bool = False) -> bytes:
    """JSON text as a hostile client writes it: lone surrogates as raw (invalid UTF-8) bytes
    unless `ascii_only` (then as `\\ud800` escapes), integers of any size, deep nesting."""
    text = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)
    text = _expand_deep(text if ascii_only else text.replace("\x00deep:", "\\u0000deep:"))
    return text.encode("utf-8", "surrogatepass")


# --- a mutator: break a valid document at one path at a time ------------------------------------

Path = tuple[Any, ...]


def paths(value: Any, prefix: Path = (), limit: int = 400) -> list[Path]:
    """Every path into a JSON value (the root included), breadth-limited."""
    out: list[Path] = [prefix]
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    else:
        return out
    for key, child in children:
        if len(out) >= limit:
            break
        out.extend(paths(child, (*prefix, key), limit - len(out)))
    return out


def _get(value: Any, path: Path) -> Any:
    for key in path:
        value = value[key]
    return value


def _set(root: Any, path: Path, new: Any) -> Any:
    if not path:
        return new
    _get(root, path[:-1])[path[-1]] = new
    return root


def _delete(root: Any, path: Path) -> Any:
    if not path:
        return None
    parent = _get(root, path[:-1])
    del parent[path[-1]]
    return root


MUTATIONS = ("replace", "delete", "wrap_list", "wrap_object", "extra_key", "deep", "huge", "copy")


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Any], max_mutations: int = 3) -> Any:
    """A value from `base`, then up to `max_mutations` breakages at random paths: a wrong type,
    a missing key, an extra key, a deep or huge value, a value copied from elsewhere."""
    value = json.loads(json.dumps(draw(base)))  # a private copy to mutate in place
    for _ in range(draw(st.integers(0, max_mutations))):
        path = draw(st.sampled_from(paths(value)))
        operation = draw(st.sampled_from(MUTATIONS))
        target = _get(value, path)
        if operation == "replace":
            value = _set(value, path, draw(json_values()))
        elif operation == "delete":
            value = _delete(value, path)
        elif operation == "wrap_list":
            value = _set(value, path, [target])
        elif operation == "wrap_object":
            value = _set(value, path, {draw(odd_text()): target})
        elif operation == "extra_key" and isinstance(target, dict):
            target[draw(odd_text())] = draw(json_values())
        elif operation == "deep":
            value = _set(value, path, draw(deep_marker()))
        elif operation == "huge":
            size = draw(st.sampled_from([10_000, 300_000]))  # bytes, roughly
            copies = max(1, size // (len(json.dumps(target)) + 1))
            value = _set(value, path, [target] * copies if draw(st.booleans()) else "é" * size)
        elif operation == "copy":
            source = json.loads(json.dumps(_get(value, draw(st.sampled_from(paths(value))))))
            value = _set(value, path, source)
    return value


def truncated(data: st.DrawFn, raw: bytes) -> bytes:
    """Sometimes cut a body short, as a dropped connection would."""
    if raw and data(st.integers(0, 4)) == 0:
        return raw[: data(st.integers(0, len(raw) - 1))]
    return raw


# --- requests for the two ingress dialects --------------------------------------------------------

SCHEMAS = (
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    {
        "type": "object",
        "$defs": {"a": {"type": "string"}},
        "properties": {"a": {"$ref": "#/$defs/a"}},
    },
    {"type": "array", "items": {"type": "integer"}},
    {"type": "string", "enum": ["a", "b"]},
    {"$ref": "#/definitions/x", "definitions": {"x": {"type": "object"}}},
    {"type": "object", "additionalProperties": False, "properties": {}},
    {"anyOf": [{"type": "object"}, {"type": "null"}]},
    {"type": "object", "properties": {"n": {"type": "number", "minimum": 10**30}}},
    {},
    True,
)
IMAGE_URLS = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    "data:image/png;base64,!!!not base64!!!",
    "data:,",
    "https://example.invalid/cat.png",
    "file:///etc/passwd",
    "",
)


def _openai_tool(name: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"type": st.just("function")},
        optional={
            "function": st.fixed_dictionaries(
                {"name": st.just(name)},
                optional={
                    "description": odd_text(),
                    "parameters": st.sampled_from(SCHEMAS),
                    "strict": st.booleans(),
                },
            )
        },
    )


def _openai_content() -> st.SearchStrategy[Any]:
    text_part = st.fixed_dictionaries({"type": st.just("text"), "text": odd_text()})
    image_part = st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries(
                {"url": st.sampled_from(IMAGE_URLS)}, optional={"detail": st.just("low")}
            ),
        }
    )
    return st.one_of(odd_text(), st.lists(st.one_of(text_part, image_part), max_size=3))


def _openai_tool_call(index: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "id": st.just(f"call_{index}"),
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["get_weather", "", "x" * 300]),
                    "arguments": st.sampled_from(['{"city": "Paris"}', "", "{not json", "[]"]),
                }
            ),
        }
    )


def _openai_messages() -> st.SearchStrategy[list[dict[str, Any]]]:
    role_message = st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "developer", "user", "assistant"]),
            "content": _openai_content(),
        },
        optional={"name": odd_text()},
    )
    assistant_call = st.fixed_dictionaries(
        {
            "role": st.just("assistant"),
            "content": st.none(),
            "tool_calls": st.lists(_openai_tool_call(0), min_size=1, max_size=2),
        }
    )
    tool_answer = st.fixed_dictionaries(
        {
            "role": st.just("tool"),
            "tool_call_id": st.just("call_0"),
            "content": _openai_content(),
        }
    )
    last = st.fixed_dictionaries({"role": st.just("user"), "content": _openai_content()})
    history = st.lists(st.one_of(role_message, assistant_call, tool_answer), max_size=4)
    return st.builds(lambda h, m: [*h, m], history, last)


def _response_format() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.just({"type": "text"}),
        st.just({"type": "json_object"}),
        st.builds(
            lambda schema, strict: {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": strict},
            },
            st.sampled_from(SCHEMAS),
            st.booleans(),
        ),
    )


def openai_requests(models: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid Chat Completions request, every optional field sometimes present."""
    return st.fixed_dictionaries(
        {"model": st.sampled_from(models), "messages": _openai_messages()},
        optional={
            "stream": st.booleans(),
            "stream_options": st.just({"include_usage": True}),
            "max_tokens": st.integers(1, 64),
            "max_completion_tokens": st.integers(1, 64),
            "temperature": st.floats(0, 2),
            "top_p": st.floats(0, 1),
            "stop": st.one_of(odd_text(), st.lists(st.text(max_size=5), max_size=4)),
            "tools": st.lists(_openai_tool("get_weather"), max_size=3),
            "tool_choice": st.one_of(
                st.sampled_from(["auto", "none", "required"]),
                st.just({"type": "function", "function": {"name": "get_weather"}}),
            ),
            "parallel_tool_calls": st.booleans(),
            "response_format": _response_format(),
            "user": odd_text(),
            "n": st.integers(1, 3),
            "seed": st.integers(),
            "logprobs": st.booleans(),
            "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
        },
    )


def _anthropic_block() -> st.SearchStrategy[dict[str, Any]]:
    image = st.fixed_dictionaries(
        {
            "type": st.just("image"),
            "source": st.one_of(
                st.fixed_dictionaries(
                    {
                        "type": st.just("base64"),
                        "media_type": st.sampled_from(["image/png", "text/plain", ""]),
                        "data": st.sampled_from(["iVBORw0KGgo=", "!!", ""]),
                    }
                ),
                st.fixed_dictionaries({"type": st.just("url"), "url": st.sampled_from(IMAGE_URLS)}),
            ),
        }
    )
    text = st.fixed_dictionaries(
        {"type": st.just("text"), "text": odd_text()},
        optional={"cache_control": st.just({"type": "ephemeral"})},
    )
    return st.one_of(text, image)


def _anthropic_messages() -> st.SearchStrategy[list[dict[str, Any]]]:
    content = st.one_of(odd_text(), st.lists(_anthropic_block(), min_size=1, max_size=3))
    tool_use = st.fixed_dictionaries(
        {
            "type": st.just("tool_use"),
            "id": st.sampled_from(["toolu_1", "functions.x:0", ""]),
            "name": st.just("get_weather"),
            "input": st.one_of(st.just({"city": "Paris"}), json_values(4)),
        }
    )
    tool_result = st.fixed_dictionaries(
        {
            "type": st.just("tool_result"),
            "tool_use_id": st.just("toolu_1"),
            "content": content,
        },
        optional={"is_error": st.booleans()},
    )
    thinking = st.fixed_dictionaries(
        {"type": st.just("thinking"), "thinking": odd_text(), "signature": st.just("sig")}
    )
    assistant = st.fixed_dictionaries(
        {
            "role": st.just("assistant"),
            "content": st.one_of(
                content, st.lists(st.one_of(_anthropic_block(), tool_use, thinking), max_size=3)
            ),
        }
    )
    user = st.fixed_dictionaries(
        {
            "role": st.just("user"),
            "content": st.one_of(
                content, st.lists(st.one_of(_anthropic_block(), tool_result), max_size=3)
            ),
        }
    )
    last = st.fixed_dictionaries({"role": st.just("user"), "content": content})
    return st.builds(lambda h, m: [*h, m], st.lists(st.one_of(user, assistant), max_size=4), last)


def anthropic_requests(models: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid Messages request, every optional field sometimes present."""
    tool = st.fixed_dictionaries(
        {"name": st.just("get_weather"), "input_schema": st.sampled_from(SCHEMAS)},
        optional={"description": odd_text(), "cache_control": st.just({"type": "ephemeral"})},
    )
    server_tool = st.just({"type": "web_search_20250305", "name": "web_search", "max_uses": 1})
    return st.fixed_dictionaries(
        {
            "model": st.sampled_from(models),
            "max_tokens": st.integers(1, 64),
            "messages": _anthropic_messages(),
        },
        optional={
            "system": st.one_of(odd_text(), st.lists(_anthropic_block(), max_size=2)),
            "stream": st.booleans(),
            "temperature": st.floats(0, 1),
            "top_p": st.floats(0, 1),
            "top_k": st.integers(0, 100),
            "stop_sequences": st.lists(st.text(max_size=5), max_size=3),
            "tools": st.lists(st.one_of(tool, server_tool), max_size=3),
            "tool_choice": st.one_of(
                st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"}]),
                st.just({"type": "tool", "name": "get_weather"}),
            ),
            "metadata": st.fixed_dictionaries({}, optional={"user_id": odd_text()}),
            "thinking": st.just({"type": "enabled", "budget_tokens": 1024}),
            "output_format": st.builds(
                lambda schema: {"type": "json_schema", "schema": schema}, st.sampled_from(SCHEMAS)
            ),
        },
    )


def garbage_bodies() -> st.SearchStrategy[bytes]:
    """Bytes that are not a request: random, truncated JSON, BOMs, non-UTF-8, NaN, huge."""
    prefixes = st.sampled_from(
        [b"", b'{"model": "chat", "messages": ', b"\xef\xbb\xbf{", b"[", b'{"model": NaN}']
    )
    tails = st.one_of(
        st.binary(max_size=64),
        st.sampled_from(
            [b"", b"\x00" * 10, b"\xff\xfe\xfd", b'"\xed\xa0\x80"}', b"[" * 50_000, b" " * 10**6]
        ),
    )
    return st.builds(lambda p, t: p + t, prefixes, tails)


# --- hostile headers ------------------------------------------------------------------------------

HEADER_NAMES = (
    "x-turnout-session",
    "x-turnout-exclude",
    "x-turnout-route-policy",
    "authorization",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "content-type",
    "accept",
    "user-agent",
)


def header_values() -> st.SearchStrategy[bytes]:
    # CR and LF cannot be sent (http.client refuses them, rightly); any other byte can
    raw = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
    return st.one_of(
        raw,
        st.sampled_from(
            [
                b"Bearer \xff\xfe\xfd",
                b"Bearer " + "é".encode("latin-1"),
                b"\x00",
                b"\xc3\x28",
                b"fast,, ,\xff,chat",
                b"cheapest",
                b"application/json; charset=latin-1",
                b"text/plain",
                b"s" * 8000,
            ]
        ),
    )


def hostile_headers() -> st.SearchStrategy[dict[str, bytes]]:
    return st.dictionaries(st.sampled_from(HEADER_NAMES), header_values(), max_size=4)


# --- checks shared by the decoder properties ------------------------------------------------------


def finite_seconds(value: Any) -> bool:
    return value is None or (
        isinstance(value, float | int)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def optional(kind: type | tuple[type, ...]) -> Callable[[Any], bool]:
    return lambda value: value is None or isinstance(value, kind)
