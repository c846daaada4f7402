"""Client side of the OpenAI dialect: decode a client's request, encode our answer to it."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from turnout.dialects.errors import InvalidRequest, json_object
from turnout.dialects.openai import shape, upstream
from turnout.dialects.openai_errors import encode_error
from turnout.dialects.sse import frame
from turnout.model import Delta, Request, Response, Usage

# fields we interpret; everything else is passed through to OpenAI-compatible upstreams
_KNOWN = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "tools",
    "tool_choice",
    "response_format",
    "user",
    "n",  # checked, never passed on: see _one_choice
}


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be a number between {low} and {high}", name)
    return float(value)


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"'{name}' must be a positive integer", name)
    return value


def _boolean(body: dict[str, Any], name: str, path: str | None = None) -> bool:
    """A boolean: null and absent mean false; "yes" or 1 is not one."""
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(f"'{path or name}' must be a boolean", path or name)
    return bool(value)


def _one_choice(body: dict[str, Any]) -> None:
    """turnout answers one choice: failover may reach a provider that cannot return several,
    so `n` > 1 is refused rather than silently answered with one."""
    n = body.get("n")
    if n is None or (type(n) is int and n == 1):
        return
    if type(n) is not int or n < 1:  # type(): True is an int to isinstance
        raise InvalidRequest("'n' must be a positive integer", "n")
    raise InvalidRequest(
        f"'n' is {n}: turnout returns one choice per request; send {n} requests instead", "n"
    )


def decode_request(raw: bytes) -> Request:
    """A client's /v1/chat/completions body -> Request. Raises InvalidRequest."""
    body = json_object(
        raw, "the request body is not valid JSON", "the request body must be a JSON object"
    )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is a required property: name a route or a model", "model")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    elif stop is not None and not (
        isinstance(stop, list) and all(isinstance(s, str) for s in stop)
    ):
        raise InvalidRequest("'stop' must be a string or an array of strings", "stop")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise InvalidRequest("'stream_options' must be an object", "stream_options")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string", "user")
    _one_choice(body)
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    return Request(
        model=model,
        messages=shape.messages(body),
        stream=_boolean(body, "stream"),
        include_usage=_boolean(
            stream_options or {}, "include_usage", "stream_options.include_usage"
        ),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        stop=stop,
        tools=shape.tools(body),
        tool_choice=shape.tool_choice(body),
        response_format=shape.response_format(body),
        user=user,
        # max_completion_tokens stays in extra too: OpenAI's reasoning models refuse max_tokens
        extra={k: v for k, v in body.items() if k not in _KNOWN},
    )


def encode_usage(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    if usage.cost is not None:
        out["cost"] = usage.cost  # USD, as OpenRouter reports it; turnout's own figure
    return out


def _tool_calls(response: Response) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in response.tool_calls
    ]


def _passed_through(answer: dict[str, Any], usage: Usage, model: str) -> bytes:
    """The upstream's own answer (a pass-through): today's `model` and `usage` fields laid
    over it, the upstream's other fields (system_fingerprint, logprobs, service_tier, its
    own usage details...) kept, so the client sees a superset of a re-encoded answer."""
    answer["model"] = model
    theirs = answer.get("usage")
    if type(theirs) is not dict:
        answer["usage"] = encode_usage(usage)
        return orjson.dumps(answer)
    # what encode_usage writes, written over theirs; the details objects merged into theirs
    theirs["prompt_tokens"] = usage.prompt_tokens
    theirs["completion_tokens"] = usage.completion_tokens
    theirs["total_tokens"] = usage.prompt_tokens + usage.completion_tokens
    if usage.cached_tokens:
        _detail(theirs, "prompt_tokens_details", "cached_tokens", usage.cached_tokens)
    if usage.reasoning_tokens:
        _detail(theirs, "completion_tokens_details", "reasoning_tokens", usage.reasoning_tokens)
    if usage.cost is not None:
        theirs["cost"] = usage.cost
    return orjson.dumps(answer)


def _detail(usage: dict[str, Any], details: str, name: str, value: int) -> None:
    kept = usage.get(details)
    usage[details] = {**kept, name: value} if type(kept) is dict else {name: value}


def encode_response(response: Response, model: str) -> bytes:
    if response.raw is not None:
        try:
            return _passed_through(response.raw, response.usage, model)
        except orjson.JSONEncodeError:
            # orjson reads 1024 levels of nesting but writes 255: a field deeper than that
            # (in what the full decode ignores) is left out by decoding the answer in full
            response = upstream.decoded(response.raw, response.usage)
    message: dict[str, Any] = {"role": "assistant", "content": response.content}
    if response.tool_calls:
        message["tool_calls"] = _tool_calls(response)
    if response.reasoning:
        message["reasoning_content"] = response.reasoning
    return orjson.dumps(
        {
            "id": response.id,
            "object": "chat.completion",
            "created": response.created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": response.finish_reason,
                }
            ],
            "usage": encode_usage(response.usage),
        }
    )


def encode_chunk(delta: Delta, chunk_id: str, created: int, model: str) -> bytes:
    """One chat.completion.chunk. A usage-only delta becomes the empty-choices usage chunk."""
    head = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model}
    if delta.usage is not None and not delta.has_content and delta.finish_reason is None:
        return orjson.dumps({**head, "choices": [], "usage": encode_usage(delta.usage)})
    out: dict[str, Any] = {}
    if delta.role:
        out["role"] = delta.role
    if delta.content is not None:
        out["content"] = delta.content
    if delta.reasoning is not None:
        out["reasoning_content"] = delta.reasoning
    if delta.tool_calls:
        calls = []
        for call in delta.tool_calls:
            item: dict[str, Any] = {"index": call.index}
            function: dict[str, Any] = {"arguments": call.arguments}
            if call.id:
                item["id"] = call.id
                item["type"] = "function"
            if call.name:
                function["name"] = call.name
            item["function"] = function
            calls.append(item)
        out["tool_calls"] = calls
    choice = {"index": 0, "delta": out, "logprobs": None, "finish_reason": delta.finish_reason}
    return orjson.dumps({**head, "choices": [choice]})


_DONE = b"data: [DONE]\n\n"


class OpenAIStreamEncoder:
    """chat.completion.chunk events; usage in its own last chunk when the client asked."""

    __slots__ = ("_created", "_id", "_include_usage", "_model")

    def __init__(self, request: Request, model: str, chunk_id: str, created: int) -> None:
        self._include_usage = request.include_usage
        self._model = model
        self._id = chunk_id
        self._created = created

    def start(self) -> bytes:
        return b""

    def delta(self, delta: Delta) -> bytes:
        if not (delta.has_content or delta.finish_reason or delta.role):
            return b""  # a usage-only delta: usage goes in the last chunk, as OpenAI's does
        if delta.usage is not None:
            delta = Delta(
                delta.content,
                delta.reasoning,
                delta.tool_calls,
                delta.finish_reason,
                None,
                delta.role,
            )
        return frame(encode_chunk(delta, self._id, self._created, self._model))

    def finish(self, usage: Usage | None) -> bytes:
        if self._include_usage and usage is not None:
            last = encode_chunk(Delta(usage=usage), self._id, self._created, self._model)
            return frame(last) + _DONE
        return _DONE

    def error(self, status: int, message: str, code: str) -> bytes:
        # the openai SDKs raise APIError on a chunk that carries an `error` object
        return frame(encode_error(status, message, error_type="upstream_error", code=code))


class OpenAIIngress:
    """The OpenAI Chat Completions API as clients speak it."""

    name = "openai"
    decode_request = staticmethod(decode_request)
    encode_error = staticmethod(encode_error)

    @staticmethod
    def encode_response(response: Response, model: str) -> bytes:
        return encode_response(response, model)

    @staticmethod
    def stream_encoder(request: Request, model: str) -> OpenAIStreamEncoder:
        return OpenAIStreamEncoder(request, model, f"chatcmpl-{uuid.uuid4().hex}", int(time.time()))


INGRESS = OpenAIIngress()
