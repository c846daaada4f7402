"""OpenAI Chat Completions wire shapes: answers, stream chunks, error bodies, headers."""

from __future__ import annotations

from typing import Any

import orjson

FINGERPRINT = "fp_turnout_sim"
DONE = b"data: [DONE]\n\n"
# an error inside a 200 stream, as OpenRouter and Groq send one (stream_error_after)
STREAM_ERROR = (
    b'data: {"error":{"message":"Overloaded (simulated)","type":"overloaded_error",'
    b'"param":null,"code":529}}\n\n'
)
JSON_HEADERS = {"content-type": "application/json"}
SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache"}

# status -> (type, code, message), as OpenAI (and, for 529, Anthropic) word them
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    402: ("insufficient_quota", "insufficient_quota", "You exceeded your current quota."),
    403: ("permission_error", None, "You are not allowed to use this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    408: ("timeout_error", None, "Request timed out."),
    409: ("conflict_error", None, "Conflict."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
    504: ("server_error", None, "Gateway timeout."),
    529: ("overloaded_error", None, "Overloaded"),
}


def error_body(
    status: int,
    message: str | None = None,
    *,
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    """`{"error": {"message", "type", "param", "code"}}` for a status."""
    default_type = "server_error" if status >= 500 else "invalid_request_error"
    error_type, default_code, default_message = _ERRORS.get(
        status, (default_type, None, f"Simulated error {status}.")
    )
    return orjson.dumps(
        {
            "error": {
                "message": message or f"{default_message} (simulated)",
                "type": error_type,
                "param": param,
                "code": code or default_code,
            }
        }
    )


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def completion(
    completion_id: str,
    created: int,
    model: str,
    message: dict[str, Any],
    finish_reason: str,
    usage_: dict[str, Any],
) -> bytes:
    return orjson.dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": usage_,
        }
    )


class ChunkEncoder:
    """`data: {chat.completion.chunk}` lines for one stream.

    The envelope (id, created, model) is encoded once per stream; each token only encodes
    its own text, which keeps the sim cheap as a benchmark upstream.
    """

    __slots__ = ("_head", "_tail")

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        envelope = orjson.dumps(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": FINGERPRINT,
            }
        )
        self._head = b"data: " + envelope[:-1] + b',"choices":['
        # with include_usage every chunk carries "usage": null until the last one
        self._tail = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._head + orjson.dumps(choice) + self._tail

    def content(self, text: str) -> bytes:
        return (
            self._head
            + b'{"index":0,"delta":{"content":'
            + orjson.dumps(text)
            + b'},"logprobs":null,"finish_reason":null}'
            + self._tail
        )

    def arguments(self, fragment: str) -> bytes:
        return (
            self._head
            + b'{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":'
            + orjson.dumps(fragment)
            + b"}}]},"
            + b'"logprobs":null,"finish_reason":null}'
            + self._tail
        )

    def usage(self, usage_: dict[str, Any]) -> bytes:
        return self._head + b'],"usage":' + orjson.dumps(usage_) + b"}\n\n"


def duration_text(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `250ms`, `6m0s`."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:g}s" if minutes else f"{rest:g}s"


def seconds_text(seconds: float) -> str:
    return f"{seconds:g}"
