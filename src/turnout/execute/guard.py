"""The structured-output guard: when the client asked for JSON (or the route declares an
output schema), an answer that does not parse, or does not match the schema, is a failed
attempt (`invalid_output`) like any other, so the next target gets a chance.

One repair is made rather than failed: a JSON answer wrapped in a Markdown code fence."""

from __future__ import annotations

import functools
import re
from typing import Any

import orjson
from jsonschema import validators
from jsonschema.exceptions import best_match

from turnout.model import ErrorClass, Request, Response, UpstreamError

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n?```\s*$", re.DOTALL)


def applies(request: Request, route_schema: dict[str, Any] | None) -> bool:
    return route_schema is not None or request.wants_json


@functools.lru_cache(maxsize=256)
def _validator(schema_json: bytes) -> Any:
    schema = orjson.loads(schema_json)
    cls = validators.validator_for(schema)
    return cls(schema)


def check(
    response: Response, request: Request, route_schema: dict[str, Any] | None
) -> UpstreamError | None:
    """None when the answer is usable; else the failure. May repair `response.content`."""
    if response.tool_calls and not response.content:
        return None  # a tool call is the answer; its arguments are the client's to check
    text = response.content or ""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        fenced = _FENCE.match(text)
        try:
            value = orjson.loads(fenced.group(1)) if fenced else None
        except orjson.JSONDecodeError:
            fenced = None
        if not fenced:
            cut = " (cut off at max_tokens)" if response.finish_reason == "length" else ""
            return UpstreamError(
                ErrorClass.INVALID_OUTPUT,
                f"the answer is not valid JSON{cut}: {text[:80]!r}",
                status=200,
                detail="json",
            )
        response.content = fenced.group(1)
    schema = route_schema or request.json_schema
    if schema is None:
        return None
    error = best_match(
        _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)).iter_errors(value)
    )
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return UpstreamError(
        ErrorClass.INVALID_OUTPUT,
        f"the answer does not match the schema at {where}: {error.message[:200]}",
        status=200,
        detail="schema",
    )
