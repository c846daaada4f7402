"""Client side of the Anthropic dialect: decode a client's `POST /v1/messages` body, and
answer it as Anthropic would: a `message` object, the named-event stream, error bodies."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from turnout.dialects.anthropic.convert import (
    AnthropicRequest,
    Json,
    Native,
    messages_from_anthropic,
    tool_choice_from_anthropic,
    tool_input,
    tools_from_anthropic,
)
from turnout.dialects.errors import InvalidRequest, check_schema, json_object
from turnout.dialects.sse import frame
from turnout.model import Delta, Request, Response, Usage

# fields turnout interprets; the rest reach Anthropic upstreams only (AnthropicRequest.native)
_KNOWN = {
    "model",
    "messages",
    "system",
    "max_tokens",
    "stream",
    "temperature",
    "top_p",
    "stop_sequences",
    "tools",
    "tool_choice",
    "metadata",
    "output_config",
    "output_format",  # the structured-outputs beta's name for output_config.format
}

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_TYPES = {*_ERROR_TYPES.values()}


# --- requests ------------------------------------------------------------------------------------


def _invalid(name: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{name}: {problem}", name)


def _number(body: Json, name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(name, "Input should be a valid number")
    if value < 0:
        raise _invalid(name, "Input should be greater than or equal to 0")
    if value > 1:
        raise _invalid(name, "Input should be less than or equal to 1")
    return float(value)


def _max_tokens(body: Json) -> int:
    value = body.get("max_tokens")
    if value is None:
        raise _invalid("max_tokens", "Field required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid("max_tokens", "Input should be a valid integer")
    if value < 1:
        raise _invalid("max_tokens", "Input should be greater than or equal to 1")
    return value


def _stop_sequences(body: Json) -> list[str] | None:
    stop = body.get("stop_sequences")
    if stop is None:
        return None
    if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
        raise _invalid("stop_sequences", "Input should be a valid list of strings")
    return stop or None


def _user(body: Json) -> str | None:
    metadata = body.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise _invalid("metadata", "Input should be a valid dictionary")
    user = metadata.get("user_id")
    if user is not None and not isinstance(user, str):
        raise _invalid("metadata.user_id", "Input should be a valid string")
    return user


def _json_schema_format(output_format: Any, path: str) -> Json | None:
    """An Anthropic output format as an OpenAI response_format (None for other formats)."""
    if not isinstance(output_format, dict):
        raise _invalid(path, "Input should be a valid dictionary")
    if output_format.get("type") != "json_schema":
        return None
    schema = output_format.get("schema")
    if schema is None:
        raise _invalid(f"{path}.schema", "Field required")
    check_schema(schema, f"{path}.schema")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def _output_config(body: Json) -> tuple[Json | None, Json]:
    """(OpenAI response_format, the rest of output_config: effort and the like)."""
    config = body.get("output_config")
    if config is not None and not isinstance(config, dict):
        raise _invalid("output_config", "Input should be a valid dictionary")
    rest = dict(config or {})
    response_format = None
    if rest.get("format") is not None:
        response_format = _json_schema_format(rest["format"], "output_config.format")
        if response_format is not None:
            del rest["format"]  # the upstream encoder writes it back from response_format
    if body.get("output_format") is not None:
        beta = _json_schema_format(body["output_format"], "output_format")
        if beta is None:
            raise _invalid("output_format.type", "Input should be 'json_schema'")
        response_format = response_format or beta
    return response_format, rest


def _signed(messages: list[Json]) -> list[Json]:
    """The client's messages, less thinking blocks without a signature: turnout made those
    (it does not carry signatures) and Anthropic would refuse them."""
    out = []
    for message in messages:
        content = message.get("content")
        if message.get("role") == "assistant" and isinstance(content, list):
            kept = [
                block
                for block in content
                if not (block.get("type") == "thinking" and not block.get("signature"))
            ]
            if len(kept) != len(content):
                message = {**message, "content": kept}
        out.append(message)
    return out


def decode_request(raw: bytes) -> AnthropicRequest:
    """A client's /v1/messages body -> Request. Raises InvalidRequest, worded as Anthropic's."""
    body = json_object(
        raw, "The request body is not valid JSON", "The request body must be a JSON object."
    )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "Field required")
    max_tokens = _max_tokens(body)
    system = body.get("system")
    messages = messages_from_anthropic(system, body.get("messages"))
    tools = tools_from_anthropic(body.get("tools"))
    tool_choice, parallel = tool_choice_from_anthropic(body.get("tool_choice"))
    response_format, output_config = _output_config(body)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("stream", "Input should be a valid boolean")
    fields = {k: v for k, v in body.items() if k not in _KNOWN}
    if output_config:
        fields["output_config"] = output_config
    native = Native(
        fields=fields,
        system=system,
        messages=_signed(body["messages"]),
        tools=body.get("tools"),
        decoded_messages=list(messages),
        decoded_tools=list(tools) if tools is not None else None,
    )
    return AnthropicRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=True,  # an Anthropic stream always reports usage
        max_tokens=max_tokens,
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        stop=_stop_sequences(body),
        tools=tools,
        tool_choice=tool_choice,
        response_format=response_format,
        user=_user(body),
        # OpenAI's name for disable_parallel_tool_use, which OpenAI-compatible upstreams take
        # too (OpenAI refuses it without tools)
        extra={"parallel_tool_calls": False} if tools and not parallel else {},
        native=native,
    )


# --- answers --------------------------------------------------------------------------------------


def encode_usage(usage: Usage) -> Json:
    """Anthropic counts cache reads apart from input_tokens; ours are part of prompt_tokens."""
    return {
        "input_tokens": max(usage.prompt_tokens - usage.cached_tokens, 0),
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


def stop_reason(finish_reason: str | None, has_calls: bool) -> str:
    if finish_reason is None:
        return "tool_use" if has_calls else "end_turn"
    return _STOP_REASONS.get(finish_reason, "end_turn")


def message_id(response_id: str) -> str:
    if response_id.startswith("msg_"):
        return response_id
    return f"msg_{response_id or uuid.uuid4().hex[:24]}"


def encode_response(response: Response, model: str) -> bytes:
    content: list[Json] = []
    if response.thinking:
        content.extend(response.thinking)  # Anthropic's own blocks, signatures and all
    elif response.reasoning:
        # another dialect's reasoning has no signature: an empty one marks the block as ours
        content.append({"type": "thinking", "thinking": response.reasoning, "signature": ""})
    if response.content:
        content.append({"type": "text", "text": response.content})
    for call in response.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": tool_input(call.arguments),
            }
        )
    return orjson.dumps(
        {
            "id": message_id(response.id),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason(response.finish_reason, bool(response.tool_calls)),
            "stop_sequence": None,
            "usage": encode_usage(response.usage),
        }
    )


def type_for_status(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def encode_error(
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    """Anthropic's error body: {"type": "error", "error": {"type", "message"}}. Another
    dialect's error type (OpenAI's `requests`, `service_unavailable`) gives way to the one
    Anthropic uses for the status."""
    kind = error_type if error_type in _ANTHROPIC_TYPES else type_for_status(status)
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


# --- streams --------------------------------------------------------------------------------------


def _event(name: str, data: Json) -> bytes:
    return frame(orjson.dumps(data), name)


class AnthropicStreamEncoder:
    """message_start, then one content block at a time (a new block whenever the kind of
    content changes: thinking, text, each tool call), message_delta, message_stop."""

    __slots__ = (
        "_finish",
        "_id",
        "_kind",
        "_model",
        "_next",
        "_open",
        "_signed",
        "_tools",
        "_usage",
    )

    def __init__(self, model: str, message_id: str) -> None:
        self._model = model
        self._id = message_id
        self._open: int | None = None  # the open content block's index
        self._kind: str | None = None  # thinking, text or tool
        self._next = 0
        self._tools: dict[int, int] = {}  # tool call index -> its content block index
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._signed = False  # the open thinking block has its signature: it is complete

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # not known yet: message_delta carries the real counts, which clients keep
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open, self._kind = self._open, None, None
        return _event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _begin(self, kind: str, block: Json) -> bytes:
        closing = self._close()
        self._open, self._kind = self._next, kind
        self._next += 1
        start = {"type": "content_block_start", "index": self._open, "content_block": block}
        return closing + _event("content_block_start", start)

    def _delta(self, index: int, delta: Json) -> bytes:
        event = {"type": "content_block_delta", "index": index, "delta": delta}
        return _event("content_block_delta", event)

    def delta(self, delta: Delta) -> bytes:
        out: list[bytes] = []
        if delta.reasoning:
            if self._kind != "thinking" or self._signed:  # a signed block is whole: a new one
                self._signed = False
                out.append(
                    self._begin("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                )
            out.append(
                self._delta(
                    self._open or 0, {"type": "thinking_delta", "thinking": delta.reasoning}
                )
            )
        if delta.signature and self._kind == "thinking":
            self._signed = True
            out.append(
                self._delta(
                    self._open or 0, {"type": "signature_delta", "signature": delta.signature}
                )
            )
        if delta.redacted:
            redacted = {"type": "redacted_thinking", "data": delta.redacted}
            out.append(self._begin("redacted", redacted) + self._close())
        if delta.content:
            if self._kind != "text":
                out.append(self._begin("text", {"type": "text", "text": ""}))
            out.append(self._delta(self._open or 0, {"type": "text_delta", "text": delta.content}))
        for call in delta.tool_calls or ():
            block = self._tools.get(call.index)
            if block is None:
                tool = {
                    "type": "tool_use",
                    "id": call.id or f"toolu_{call.index}",
                    "name": call.name or "",
                    "input": {},
                }
                out.append(self._begin("tool", tool))
                block = self._tools[call.index] = self._next - 1
            if call.arguments:
                # a call resumed after another began (rare) still names its own block
                partial = {"type": "input_json_delta", "partial_json": call.arguments}
                out.append(self._delta(block, partial))
        if delta.finish_reason:
            self._finish = delta.finish_reason
        if delta.usage is not None:
            self._usage = delta.usage
        return b"".join(out)

    def finish(self, usage: Usage | None) -> bytes:
        usage = usage or self._usage
        message_delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": stop_reason(self._finish, bool(self._tools)),
                "stop_sequence": None,
            },
            "usage": encode_usage(usage) if usage is not None else {"output_tokens": 0},
        }
        return (
            self._close()
            + _event("message_delta", message_delta)
            + _event("message_stop", {"type": "message_stop"})
        )

    def error(self, status: int, message: str, code: str) -> bytes:
        # the SDKs raise on an `error` event, whatever came before it
        error = {"type": "error", "error": {"type": type_for_status(status), "message": message}}
        return _event("error", error)


class AnthropicIngress:
    """The Anthropic Messages API as clients speak it."""

    name = "anthropic"
    decode_request = staticmethod(decode_request)
    encode_error = staticmethod(encode_error)

    @staticmethod
    def encode_response(response: Response, model: str) -> bytes:
        return encode_response(response, model)

    @staticmethod
    def stream_encoder(request: Request, model: str) -> AnthropicStreamEncoder:
        return AnthropicStreamEncoder(model, f"msg_{uuid.uuid4().hex[:24]}")


INGRESS = AnthropicIngress()
