"""OpenAI's error body, shared by the two OpenAI client APIs turnout speaks (Chat Completions
and Responses): both answer `{"error": {"message", "type", "param", "code"}}`. It lives beside
the wire formats rather than inside one, so neither imports the other."""

from __future__ import annotations

import orjson

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


def encode_error(
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    kind = error_type or _ERROR_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})
