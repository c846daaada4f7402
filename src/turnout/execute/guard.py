"""The structured-output guard: when the client asked for JSON (or the route declares an
output schema), an answer that does not parse, or does not match the schema, is a failed
attempt (`invalid_output`) like any other, so the next target gets a chance.

One repair is made rather than failed: a JSON answer wrapped in a Markdown code fence.

A streamed answer is checked whole here only on routes with `guard.buffer_streams`; on the
others it is checked as it streams (execute/stream_check.py), with the same schema check."""

from __future__ import annotations

import re
from typing import Any

import orjson
from jsonschema.exceptions import best_match

from turnout.model import ErrorClass, Request, Response, UpstreamError, json_schema

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n?```\s*$", re.DOTALL)


def applies(request: Request, route_schema: dict[str, Any] | None) -> bool:
    return route_schema is not None or request.wants_json


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
            if cut and request.max_tokens is not None:
                return cut_by_client(request.max_tokens)
            return UpstreamError(
                ErrorClass.INVALID_OUTPUT,
                f"the answer is not valid JSON{cut}: {text[:80]!r}",
                status=200,
                detail="json",
            )
        response.content = fenced.group(1)
    schema = schema_for(request, route_schema)
    return None if schema is None else schema_error(value, schema)


def schema_for(request: Request, route_schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema an answer must match: the route's own, else the client's; None for none."""
    return route_schema or request.json_schema


def schema_error(value: Any, schema: dict[str, Any]) -> UpstreamError | None:
    """None when `value` (parsed JSON) matches `schema`; else the guard's failure."""
    # the schema was checked when the request (or the config) was decoded; this is the same
    # cached validator, which resolves nothing outside the schema and so never does I/O
    validator = json_schema.checked(schema)
    try:
        error = best_match(validator.iter_errors(value))
    except RecursionError:  # an answer nested deeper than the stack can check
        return UpstreamError(
            ErrorClass.INVALID_OUTPUT,
            "the answer is nested too deeply to check against the schema",
            status=200,
            detail="schema",
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


def cut_by_client(max_tokens: int) -> UpstreamError:
    """JSON cut off at the client's own max_tokens is the client's to fix: a 400 passed back
    as it is, not a failure of the model (which would count against its health, so that a
    client could take healthy models out of service with tiny max_tokens)."""
    return UpstreamError(
        ErrorClass.CLIENT_ERROR,
        f"the JSON answer was cut off at max_tokens ({max_tokens}) before it was complete:"
        " raise max_tokens",
        status=400,
        error_type="invalid_request_error",
        param="max_tokens",
        detail="json",
    )
