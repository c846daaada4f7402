"""The client-side error every ingress dialect raises for a malformed request."""

from __future__ import annotations

from typing import Any

import orjson


class InvalidRequest(Exception):
    """The client's request is malformed: a 400 in the client's own error shape."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


def json_object(raw: bytes, not_json: str, not_object: str) -> dict[str, Any]:
    """The request body as a JSON object, or InvalidRequest in the dialect's own words."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{not_json}: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(not_object)
    return body
