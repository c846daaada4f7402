"""The client-side error every ingress dialect raises for a malformed request."""

from __future__ import annotations

from typing import Any

import orjson

from turnout.model.errors import GatewayError
from turnout.model.json_schema import UnusableSchema, checked


class InvalidRequest(GatewayError):
    """The client's request is malformed: a 400 in the client's own error shape."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(status, message, param=param)


def json_object(raw: bytes, not_json: str, not_object: str) -> dict[str, Any]:
    """The request body as a JSON object, or InvalidRequest in the dialect's own words."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{not_json}: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(not_object)
    # nesting deeper than the limit needs more opening brackets than the limit: a small body
    # has a few dozen, counted at C speed, and is never walked; a large one is walked, which
    # costs less than scanning its bytes (a long prompt is one string in a few containers)
    few = len(raw) <= _SCAN_BYTES and raw.count(b"[") + raw.count(b"{") <= MAX_BODY_DEPTH
    if not few and _deeper_than(body, MAX_BODY_DEPTH):
        # orjson reads 1024 levels but writes only 255: a deeper field could not be sent on
        raise InvalidRequest(f"the request body nests deeper than {MAX_BODY_DEPTH} levels")
    return body


MAX_BODY_DEPTH = 128  # far beyond any real request; client schemas have their own, lower, bound
_SCAN_BYTES = 16 * 1024  # bodies up to this are scanned for brackets, longer ones walked


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit`, walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def check_schema(schema: Any, field: str) -> None:
    """InvalidRequest (a 400 naming `field`) unless `schema` is a usable JSON Schema."""
    try:
        checked(schema)
    except UnusableSchema as exc:
        raise InvalidRequest(f"{field}: {exc}", field) from None
