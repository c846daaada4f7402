"""Provider side of the Anthropic dialect: the body we send `POST /v1/messages`, and how we
read its answers, stream events and errors.

JSON output, for a request with an OpenAI `response_format`:
- json_schema, `structured_output=True`: Anthropic's structured outputs, `output_config.format`
  (generally available: no beta header needed)
- json_schema, `structured_output=False`: the forced-tool technique for models without
  structured outputs: one extra tool, `json_output`, whose input schema is the wanted schema,
  with tool_choice forcing it; its call is decoded back into text content
- json_object: Anthropic has no JSON mode, so a system instruction asks for a JSON object only
  (the output guard is what checks the answer really is one)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from turnout.dialects.anthropic.convert import (
    AnthropicRequest,
    Json,
    messages_to_anthropic,
    tool_choice_to_anthropic,
    tools_to_anthropic,
)
from turnout.dialects.classify import (
    class_for_status,
    mentions_context_length,
    refuses_content,
    retry_after,
)
from turnout.dialects.sse import SSEEvent
from turnout.dialects.untrusted import count, json_text, mapping, text
from turnout.model import (
    Delta,
    ErrorClass,
    Request,
    Response,
    ToolCall,
    ToolCallDelta,
    UpstreamError,
    Usage,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
JSON_TOOL = "json_output"
JSON_TOOL_DESCRIPTION = "Give the final answer: call this once, with the answer as its input."
JSON_INSTRUCTION = (
    "Respond with one valid JSON object and nothing else: no text before or after it and no"
    " Markdown code fences."
)

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",  # a server tool loop paused: what came so far is the answer
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_ERROR_CLASSES = {
    "invalid_request_error": ErrorClass.CLIENT_ERROR,
    "request_too_large": ErrorClass.CLIENT_ERROR,
    "authentication_error": ErrorClass.AUTH,
    "permission_error": ErrorClass.AUTH,
    # the model name in our own config is wrong: misconfigured, like a bad key
    "not_found_error": ErrorClass.AUTH,
    "billing_error": ErrorClass.QUOTA,
    "rate_limit_error": ErrorClass.RATE_LIMITED,
    "overloaded_error": ErrorClass.OVERLOADED,
    "api_error": ErrorClass.SERVER_ERROR,
    "timeout_error": ErrorClass.TIMEOUT,
}
# Anthropic words running out of money as a 400 or 403: "Your credit balance is too low to
# access the Anthropic API", "You have reached your specified API usage limits"
_QUOTA_HINTS = ("credit balance", "spend limit", "usage limit", "billing")
# besides classify's hints: "input length and `max_tokens` exceed context limit"
_CONTEXT_HINT = "context limit"


# --- requests ------------------------------------------------------------------------------------


def _with_instruction(system: Any, instruction: str) -> str | list[Json]:
    if not system:
        return instruction
    if isinstance(system, str):
        return f"{system}\n\n{instruction}"
    return [*system, {"type": "text", "text": instruction}]


def _thinking(fields: Json) -> bool:
    thinking = fields.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _json_tool_choice(
    request: Request, tools: list[Json], tool_choice: Json | None, thinking: bool
) -> Json:
    """tool_choice for the forced-tool technique, the JSON tool not yet among `tools`."""
    if tool_choice is not None and tool_choice.get("type") == "tool":
        return tool_choice  # a tool the client named stays its choice
    if thinking:
        return {"type": "auto"}  # thinking refuses forced tool use
    if tools and request.tool_choice != "none":
        return {"type": "any"}  # one of the client's tools may come before the answer
    return {"type": "tool", "name": JSON_TOOL}


def encode_request(
    request: Request,
    upstream_model: str,
    stream: bool,
    *,
    max_tokens: int = 4096,
    structured_output: bool = True,
) -> dict[str, Any]:
    """The Messages body. `max_tokens` is sent when the request names none (Anthropic
    requires it)."""
    native = request.native if isinstance(request, AnthropicRequest) else None
    if native is not None and native.messages_unchanged(request):
        system, messages = native.system, native.messages
    else:
        system, messages = messages_to_anthropic(request.messages)
    if native is not None and native.tools_unchanged(request):
        tools = list(native.tools or ())
    else:
        tools = tools_to_anthropic(request.tools)
    parallel = request.extra.get("parallel_tool_calls") is not False
    tool_choice = tool_choice_to_anthropic(request.tool_choice, parallel)
    fields = dict(native.fields) if native is not None else {}
    output_config = dict(fields.pop("output_config", None) or {})

    response_format = request.response_format or {}
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") or {"type": "object"}
        if structured_output:
            output_config["format"] = {"type": "json_schema", "schema": schema}
        else:
            tool_choice = _json_tool_choice(request, tools, tool_choice, _thinking(fields))
            description = spec.get("description") or JSON_TOOL_DESCRIPTION
            tools.append({"name": JSON_TOOL, "description": description, "input_schema": schema})
    elif response_format.get("type") == "json_object":
        system = _with_instruction(system, JSON_INSTRUCTION)

    body: dict[str, Any] = {
        **fields,
        "model": upstream_model,
        "max_tokens": request.max_tokens or max_tokens,
        "messages": messages,
    }
    if system:
        body["system"] = system
    if tools:
        body["tools"] = tools
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
    if output_config:
        body["output_config"] = output_config
    if request.temperature is not None:
        # OpenAI's range is 0..2, Anthropic's 0..1: the same intent, capped
        body["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = request.stop
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    return body


# --- answers --------------------------------------------------------------------------------------


def _count(raw: Mapping[str, Any], name: str) -> int:
    value = raw.get(name)
    return count(value) if isinstance(value, int) else 0


def decode_usage(raw: Any) -> Usage:
    """Anthropic's input_tokens leave out cache reads and writes; OpenAI's prompt_tokens (and
    so ours) include them."""
    if not raw or not isinstance(raw, Mapping):
        return Usage()
    cached = _count(raw, "cache_read_input_tokens")
    details = raw.get("output_tokens_details")
    return Usage(
        prompt_tokens=_count(raw, "input_tokens")
        + cached
        + _count(raw, "cache_creation_input_tokens"),
        completion_tokens=_count(raw, "output_tokens"),
        cached_tokens=cached,
        reasoning_tokens=_count(details, "thinking_tokens") if isinstance(details, dict) else 0,
    )


def finish_reason(stop_reason: Any, has_calls: bool) -> str:
    mapped = _FINISH.get(stop_reason) if isinstance(stop_reason, str) else None
    if mapped is None:
        return "tool_calls" if has_calls else "stop"
    if mapped == "tool_calls" and not has_calls:
        return "stop"  # only the forced JSON tool was called: that is the answer
    return mapped


def _classify(error_type: str | None, message: str, status: int | None) -> ErrorClass:
    if error_type in _ERROR_CLASSES:
        error_class = _ERROR_CLASSES[error_type]
    elif status is not None and status >= 400:
        error_class = class_for_status(status)
    else:
        error_class = ErrorClass.SERVER_ERROR
    if error_class is ErrorClass.AUTH and status != 401 and refuses_content(message):
        # a permission_error refusing this request's content (a policy or guardrail, as
        # OpenRouter's /messages words it) is the client's: no model or key is wrong
        return ErrorClass.CLIENT_ERROR
    lowered = message.lower()
    if error_class in (ErrorClass.CLIENT_ERROR, ErrorClass.AUTH, ErrorClass.RATE_LIMITED) and any(
        hint in lowered for hint in _QUOTA_HINTS
    ):
        return ErrorClass.QUOTA
    if error_class is ErrorClass.CLIENT_ERROR and (
        mentions_context_length(message) or _CONTEXT_HINT in lowered
    ):
        return ErrorClass.CONTEXT_LENGTH
    return error_class


def _error_from_object(error: Any, status: int | None) -> UpstreamError:
    """An `error` object: in an error body, a 200 body or a stream's `error` event."""
    if not isinstance(error, dict):
        return UpstreamError(ErrorClass.SERVER_ERROR, str(error)[:500], status=status)
    message = str(error.get("message") or "upstream error")
    error_type = error.get("type") if isinstance(error.get("type"), str) else None
    return UpstreamError(
        _classify(error_type, message, status), message, status=status, error_type=error_type
    )


def decode_error(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """A non-2xx answer -> a classified UpstreamError."""
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = _error_from_object(parsed["error"], status)
    else:
        text = body.decode("utf-8", "replace").strip()[:300] or f"HTTP {status}"
        error = UpstreamError(_classify(None, text, status), text, status=status)
    error.retry_after = retry_after(headers)
    return error


def decode_response(body: bytes, *, json_tool: bool = False) -> Response:
    """A 200 answer -> Response. `json_tool`: a `json_output` call is the answer's text."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError(
            ErrorClass.INVALID_OUTPUT, "upstream returned a body that is not JSON", status=200
        ) from None
    if not isinstance(parsed, dict):
        raise UpstreamError(ErrorClass.INVALID_OUTPUT, "upstream answer is not an object")
    if parsed.get("type") == "error":
        raise _error_from_object(parsed.get("error"), None)
    content = parsed.get("content")
    if not isinstance(content, list):
        raise UpstreamError(ErrorClass.INVALID_OUTPUT, "upstream answer has no content", status=200)
    texts: list[str] = []
    thinking: list[str] = []
    signed: list[Json] = []  # the thinking blocks as sent, signatures and all
    calls: list[ToolCall] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking") or ""))
            signed.append(_thinking_block(block))
        elif kind == "redacted_thinking" and text(block.get("data")):
            signed.append({"type": "redacted_thinking", "data": block["data"]})
        elif kind == "tool_use":
            arguments = json_text(block.get("input") or {})
            if json_tool and block.get("name") == JSON_TOOL:
                texts.append(arguments)
            else:
                name = str(block.get("name") or "")
                calls.append(ToolCall(str(block.get("id") or ""), name, arguments))
        # redacted thinking, and server tools' calls and results (web search, code execution,
        # MCP...), which Anthropic ran itself: nothing a client can act on
    return Response(
        id=text(parsed.get("id")) or "",
        model=text(parsed.get("model")) or "",
        content="".join(texts) if texts or not calls else None,
        tool_calls=calls,
        finish_reason=finish_reason(parsed.get("stop_reason"), bool(calls)),
        usage=decode_usage(parsed.get("usage")),
        reasoning="".join(thinking) or None,
        thinking=signed or None,
    )


def _thinking_block(block: Json) -> Json:
    return {
        "type": "thinking",
        "thinking": text(block.get("thinking")) or "",
        "signature": text(block.get("signature")) or "",
    }


# --- streams --------------------------------------------------------------------------------------

_TEXT, _THINKING, _TOOL, _JSON, _OTHER = "text", "thinking", "tool", "json", "other"


def _block_index(data: Json) -> int | None:
    """A content block's index; anything but an integer names no block."""
    index = data.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else None


class AnthropicStreamDecoder:
    """Named events, message_start .. message_stop; an `error` event raises."""

    __slots__ = ("_blocks", "_calls", "_json_tool", "_usage", "done", "finished")

    def __init__(self, json_tool: bool = False) -> None:
        self.done = False
        self.finished = False
        self._json_tool = json_tool
        # content block index -> (kind, the tool call's ordinal, whether arguments came)
        # by block index; None for a block whose index is missing (its deltas say none too)
        self._blocks: dict[int | None, list[Any]] = {}
        self._calls = 0  # client tool calls so far: OpenAI's tool index is their ordinal
        self._usage: dict[str, Any] = {}

    def event(self, event: SSEEvent) -> Iterable[Delta]:
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise UpstreamError(
                ErrorClass.STREAM_BROKEN, "stream sent an event that is not JSON"
            ) from None
        if not isinstance(data, dict):
            raise UpstreamError(
                ErrorClass.STREAM_BROKEN, "stream sent an event that is not an object"
            )
        kind = data.get("type") or event.event
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_start":
            return self._start(data)
        if kind == "content_block_stop":
            return self._stop(data)
        if kind == "message_start":
            self._add_usage(mapping(data.get("message")).get("usage"))
            return (Delta(role="assistant", usage=decode_usage(self._usage)),)
        if kind == "message_delta":
            self._add_usage(data.get("usage"))
            self.finished = True
            stop_reason = mapping(data.get("delta")).get("stop_reason")
            finish = finish_reason(stop_reason, self._calls > 0)
            return (Delta(finish_reason=finish, usage=decode_usage(self._usage)),)
        if kind == "message_stop":
            self.done = self.finished = True
            return ()
        if kind == "error":
            raise _error_from_object(data.get("error"), None)
        return ()  # ping, and events newer than this code

    def _add_usage(self, usage: Any) -> None:
        # message_delta counts are cumulative totals: they replace, and absent ones stay
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if v is not None)

    def _start(self, data: Json) -> tuple[Delta, ...]:
        index = _block_index(data)
        block = mapping(data.get("content_block"))
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = [_TEXT, -1, False]
            return (Delta(content=block["text"]),) if text(block.get("text")) else ()
        if kind == "thinking":
            self._blocks[index] = [_THINKING, -1, False]
            return (Delta(reasoning=block["thinking"]),) if text(block.get("thinking")) else ()
        if kind == "redacted_thinking" and text(block.get("data")):
            self._blocks[index] = [_OTHER, -1, False]
            return (Delta(redacted=block["data"]),)
        if kind != "tool_use":
            self._blocks[index] = [_OTHER, -1, False]  # server tools ran at Anthropic
            return ()
        # the input normally streams as input_json_delta; some proxies send it whole here
        raw_input = block.get("input")
        arguments = json_text(raw_input, ErrorClass.STREAM_BROKEN) if raw_input else ""
        if self._json_tool and block.get("name") == JSON_TOOL:
            self._blocks[index] = [_JSON, -1, bool(arguments)]
            return (Delta(content=arguments),) if arguments else ()
        ordinal = self._calls
        self._calls += 1
        self._blocks[index] = [_TOOL, ordinal, bool(arguments)]
        call = ToolCallDelta(ordinal, str(block.get("id") or ""), str(block.get("name") or ""))
        call.arguments = arguments
        return (Delta(tool_calls=[call]),)

    def _delta(self, data: Json) -> tuple[Delta, ...]:
        state = self._blocks.get(_block_index(data))
        delta = mapping(data.get("delta"))
        kind = delta.get("type")
        if state is None:
            return ()
        if kind == "text_delta" and state[0] == _TEXT and text(delta.get("text")):
            return (Delta(content=delta["text"]),)
        if kind == "thinking_delta" and text(delta.get("thinking")):
            return (Delta(reasoning=delta["thinking"]),)
        if kind == "signature_delta" and state[0] == _THINKING and text(delta.get("signature")):
            return (Delta(signature=delta["signature"]),)
        if kind == "input_json_delta" and text(delta.get("partial_json")):
            state[2] = True
            if state[0] == _TOOL:
                return (
                    Delta(tool_calls=[ToolCallDelta(state[1], arguments=delta["partial_json"])]),
                )
            if state[0] == _JSON:
                return (Delta(content=delta["partial_json"]),)
        return ()  # citation deltas, server tools' input

    def _stop(self, data: Json) -> tuple[Delta, ...]:
        state = self._blocks.get(_block_index(data))
        if state is None or state[2]:
            return ()
        # a call without arguments streams none: "{}" is what clients can parse
        if state[0] == _TOOL:
            return (Delta(tool_calls=[ToolCallDelta(state[1], arguments="{}")]),)
        if state[0] == _JSON:
            return (Delta(content="{}"),)
        return ()


class AnthropicUpstream:
    """api.anthropic.com, or anything else that speaks the Messages API."""

    default_base_url = DEFAULT_BASE_URL
    # a last assistant turn is continued, not answered: a broken stream's partial answer is
    # sent as one (execute/continuation.py)
    prefills_natively = True

    @staticmethod
    def prefilled(request: Request, text: str) -> Request:
        """`request` with `text` as the start of the answer, to be continued."""
        # the Messages API refuses a final assistant turn that ends in whitespace; what is
        # cut off here the continuing model writes again, and the relay trims the overlap
        messages = [*request.messages, {"role": "assistant", "content": text.rstrip()}]
        return dataclasses.replace(request, messages=messages)

    def __init__(
        self,
        max_tokens: int = 4096,
        api_version: str = DEFAULT_VERSION,
        structured_output: bool = True,
    ) -> None:
        self.max_tokens = max_tokens
        self.api_version = api_version
        self.structured_output = structured_output

    @staticmethod
    def url(base_url: str, upstream_model: str, stream: bool) -> str:
        # the SDKs' base URL has no /v1, OpenAI habits add one: either works
        return base_url.rstrip("/").removesuffix("/v1") + "/v1/messages"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": self.api_version}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def encode_request(self, request: Request, upstream_model: str, stream: bool) -> dict[str, Any]:
        return encode_request(
            request,
            upstream_model,
            stream,
            max_tokens=self.max_tokens,
            structured_output=self.structured_output,
        )

    def decode_response(self, body: bytes) -> Response:
        return decode_response(body, json_tool=not self.structured_output)

    decode_error = staticmethod(decode_error)

    def stream_decoder(self) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(json_tool=not self.structured_output)


UPSTREAM = AnthropicUpstream()
