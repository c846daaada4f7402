"""Cloudflare Workers AI's native API: `POST {base}/@cf/meta/llama-3.1-8b-instruct`.

Wire format, from Cloudflare's documentation:
- request: the "Messages" input of the text-generation models, e.g.
  https://developers.cloudflare.com/workers-ai/models/llama-3.1-8b-instruct/ (and its schema
  in cloudflare/cloudflare-docs src/content/workers-ai-models/*.json): `messages` (role and a
  string content), `max_tokens` (default 256), `temperature`, `top_p`, `top_k`, `seed`,
  `frequency_penalty`, `presence_penalty`, `repetition_penalty`, `stream`, `tools`,
  `response_format`.
- JSON mode (https://developers.cloudflare.com/workers-ai/features/json-mode/):
  `response_format: {"type": "json_schema", "json_schema": <the JSON Schema itself>}` or
  `{"type": "json_object"}`; the answer's `response` is then already an object, and JSON mode
  cannot stream.
- answer: `{"result": {"response", "tool_calls", "usage"}, "success": true, "errors": [],
  "messages": []}`; a stream is `data: {"response": "...", "p": "..."}` events, a last one
  with `usage`, then `data: [DONE]`.
- errors: `{"success": false, "errors": [{"code", "message"}]}`, codes in
  https://developers.cloudflare.com/workers-ai/platform/errors/.
- tool history: the messages schema takes only string contents, so an assistant's tool call is
  sent the way Cloudflare's own runWithTools (cloudflare/ai-utils) does: an assistant message
  whose content is `{"name", "arguments"}` as JSON, answered by `{"role": "tool", "name",
  "content"}`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from turnout.dialects.classify import (
    class_for_status,
    mentions_context_length,
    refuses_content,
    retry_after,
)
from turnout.dialects.sse import SSEEvent
from turnout.dialects.untrusted import count, json_text, mapping
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

DEFAULT_BASE = "https://api.cloudflare.com/client/v4/accounts/{account_id}/ai/run"
_JSON_MODES = ("json_object", "json_schema")
_PASSED_THROUGH = (
    "seed",
    "top_k",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
)
# internal error codes (platform/errors) -> class
_CODES = {
    3040: ErrorClass.RATE_LIMITED,  # out of capacity: no more data centers to forward to
    3036: ErrorClass.QUOTA,  # the daily free allocation of neurons is used up
    4006: ErrorClass.QUOTA,  # the same, as the OpenAI-compatible endpoints word it
    # our config names a model Workers AI does not have, or may not use: misconfigured
    5007: ErrorClass.AUTH,  # no such model
    3042: ErrorClass.AUTH,  # invalid model id
    5018: ErrorClass.AUTH,  # account not allowed to access this model
    3041: ErrorClass.AUTH,
    5016: ErrorClass.AUTH,  # model terms not agreed to
    3023: ErrorClass.AUTH,  # account blocked
    10000: ErrorClass.AUTH,  # Cloudflare API: authentication error
    9109: ErrorClass.AUTH,  # Cloudflare API: invalid access token
    7003: ErrorClass.AUTH,  # Cloudflare API: no such account (a wrong account_id)
    3007: ErrorClass.TIMEOUT,  # request timeout (HTTP 408)
    3008: ErrorClass.TIMEOUT,  # request aborted (HTTP 408)
    3006: ErrorClass.CONTEXT_LENGTH,  # request too large (413): a larger model may take it
    5021: ErrorClass.CONTEXT_LENGTH,  # "... exceeded this model context window limit"
    3010: ErrorClass.CONTEXT_LENGTH,
    3003: ErrorClass.CLIENT_ERROR,  # incomplete request
    5004: ErrorClass.CLIENT_ERROR,  # invalid data
    5006: ErrorClass.CLIENT_ERROR,  # bad input: the request fails the model's input schema
}


def json_mode(request: Request) -> bool:
    return (request.response_format or {}).get("type") in _JSON_MODES


def _text(content: Any) -> str:
    """A message content as the one string Workers AI takes. Images have nowhere to go in the
    messages schema: refuse them rather than answer as if they were never sent."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content if isinstance(content, list) else ():
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "input_text"):
            texts.append(str(part.get("text") or ""))
        elif kind is not None:
            raise UpstreamError(
                ErrorClass.CLIENT_ERROR,
                f"Workers AI's messages take text only, not {kind} parts",
                status=400,
            )
    return "".join(texts)


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return raw
    return raw if raw is not None else {}


def encode_messages(messages: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    names: dict[str, str] = {}  # tool call id -> function name, for the answers
    for message in messages:
        role = message.get("role")
        if role == "developer":
            role = "system"
        if role in ("tool", "function"):
            call_id = str(message.get("tool_call_id") or "")
            name = names.get(call_id) or str(message.get("name") or "")
            out.append({"role": "tool", "name": name, "content": _text(message.get("content"))})
            continue
        text = _text(message.get("content"))
        calls = (message.get("tool_calls") or []) if role == "assistant" else []
        if text or not calls:
            out.append({"role": str(role), "content": text})
        for call in calls:
            function = call.get("function") or {}
            name = str(function.get("name") or "")
            names[str(call.get("id") or "")] = name
            content = {"name": name, "arguments": _arguments(function.get("arguments"))}
            out.append({"role": "assistant", "content": orjson.dumps(content).decode()})
    return out


def _tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out = []
    for tool in tools or []:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            continue
        function = tool.get("function") or {}
        out.append(
            {
                "type": "function",
                "function": {
                    "name": function.get("name"),
                    # both are required by the models' input schema
                    "description": function.get("description") or "",
                    "parameters": function.get("parameters")
                    or {"type": "object", "properties": {}},
                },
            }
        )
    return out


def _response_format(response_format: dict[str, Any]) -> dict[str, Any]:
    if response_format.get("type") == "json_object":
        return {"type": "json_object"}
    # OpenAI wraps the schema as {name, schema, strict}; Workers AI wants the schema itself
    schema = (response_format.get("json_schema") or {}).get("schema")
    return {"type": "json_schema", "json_schema": schema or {"type": "object"}}


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, Mapping):
        return None
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else 0
    return Usage(
        prompt_tokens=count(raw.get("prompt_tokens")),
        completion_tokens=count(raw.get("completion_tokens")),
        cached_tokens=count(cached),
    )


def new_call_id() -> str:
    # llama 3.x calls come without ids; clients need one to answer the call
    return "call_" + uuid.uuid4().hex[:24]


def _calls(raw: Any, start: int = 0) -> list[ToolCallDelta]:
    """`tool_calls` in either shape Workers AI uses: `{name, arguments: {...}}` (llama 3.x)
    or OpenAI's `{id, type, function: {name, arguments}}` (newer models; streamed in pieces
    by `index`, later pieces without id and name)."""
    calls = []
    for i, item in enumerate(raw if isinstance(raw, list) else ()):
        if not isinstance(item, Mapping):
            continue
        nested = item.get("function")
        function: Mapping[str, Any] = nested if isinstance(nested, Mapping) else item
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json_text(arguments) if arguments is not None else ""
        index = item.get("index")
        calls.append(
            ToolCallDelta(
                index=count(index) if isinstance(index, int) else start + i,
                id=str(item["id"]) if item.get("id") else None,
                name=str(function["name"]) if function.get("name") else None,
                arguments=arguments,
            )
        )
    return calls


def _first_error(parsed: Any) -> tuple[int | None, str]:
    """(code, message) of a Cloudflare error body, in whichever shape it came."""
    if isinstance(parsed, Mapping):
        errors = parsed.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
            code = errors[0].get("code")
            return (code if isinstance(code, int) else None), str(errors[0].get("message") or "")
        error = parsed.get("error")
        if isinstance(error, Mapping):
            code = error.get("code")
            return (code if isinstance(code, int) else None), str(error.get("message") or "")
        if isinstance(error, str):
            return None, error
    return None, ""


def _class(code: int | None, message: str, status: int | None) -> ErrorClass:
    text = message.lower()
    if code in _CODES:
        return _CODES[code]
    if status == 403 and refuses_content(message):
        return ErrorClass.CLIENT_ERROR  # this request's content was refused, not the token
    if "daily free allocation" in text:
        return ErrorClass.QUOTA
    if "authentication" in text:
        return ErrorClass.AUTH
    if "json mode couldn't be met" in text:
        return ErrorClass.INVALID_OUTPUT  # the model missed the schema: another may not
    if mentions_context_length(message):
        return ErrorClass.CONTEXT_LENGTH
    if status and status >= 400:
        return class_for_status(status, message)
    return ErrorClass.SERVER_ERROR


def _error(parsed: Any, status: int | None, fallback: str) -> UpstreamError:
    code, message = _first_error(parsed)
    message = message or fallback
    return UpstreamError(
        _class(code, message, status),
        message,
        status=status,
        code=str(code) if code is not None else None,
    )


def decode_error(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    text = body.decode("utf-8", "replace").strip()[:300] or f"HTTP {status}"
    error = _error(parsed, status, text)
    error.retry_after = retry_after(headers)
    return error


def _loads(body: bytes | str, error_class: ErrorClass, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError(error_class, f"upstream sent {what} that is not JSON") from None


def _choice(result: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The first choice when a newer model answers in the Chat Completions shape."""
    choices = result.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        return choices[0]
    return None


def decode_response(body: bytes) -> Response:
    """A 200 answer -> Response. `success: false` or an unusable body raises."""
    parsed = _loads(body, ErrorClass.INVALID_OUTPUT, "an answer")
    if not isinstance(parsed, dict):
        raise UpstreamError(ErrorClass.INVALID_OUTPUT, "upstream answer is not an object")
    if parsed.get("success") is False or parsed.get("error"):
        raise _error(parsed, None, "upstream answered success: false")
    result = parsed.get("result", parsed)  # the Workers binding answers the bare result
    if not isinstance(result, dict):
        raise UpstreamError(ErrorClass.INVALID_OUTPUT, "upstream answer has no result", status=200)
    choice = _choice(result)
    message = mapping(choice.get("message")) if choice is not None else result
    answer = message.get("content") if choice is not None else result.get("response")
    if answer is not None and not isinstance(answer, str):
        answer = json_text(answer)  # JSON mode hands back the object itself
    calls = [
        ToolCall(call.id or new_call_id(), call.name or "", call.arguments or "{}")
        for call in _calls(message.get("tool_calls"))
    ]
    finish = (choice or {}).get("finish_reason")
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return Response(
        id="cf-" + uuid.uuid4().hex,  # Workers AI names no id for its answers
        model="",
        content=answer or (None if calls else ""),
        tool_calls=calls,
        finish_reason=finish if isinstance(finish, str) else "tool_calls" if calls else "stop",
        usage=_usage(result.get("usage")) or Usage(),
        reasoning=reasoning if isinstance(reasoning, str) and reasoning else None,
        created=int(time.time()),
    )


class CloudflareStreamDecoder:
    """`data: {"response": ...}` events, usage on the last one, then `data: [DONE]`. The
    events carry no finish reason: [DONE] ends a complete answer. Newer models stream Chat
    Completions chunks (`choices[].delta`) instead, still closed by a cumulative
    `{"response": "", "usage": ...}` event and [DONE]."""

    __slots__ = ("_calls", "_finish", "_started", "done", "finished")

    def __init__(self) -> None:
        self.done = False
        self.finished = False
        self._calls: set[int] = set()  # tool call indexes seen
        self._finish: str | None = None
        self._started = False

    def event(self, event: SSEEvent) -> Iterable[Delta]:
        if event.data.strip() == "[DONE]":
            self.done = self.finished = True
            finish = self._finish or ("tool_calls" if self._calls else "stop")
            return (Delta(finish_reason=finish),)
        chunk = _loads(event.data, ErrorClass.STREAM_BROKEN, "a chunk")
        if not isinstance(chunk, dict):
            raise UpstreamError(
                ErrorClass.STREAM_BROKEN, "stream sent a chunk that is not an object"
            )
        if chunk.get("errors") or chunk.get("error"):
            raise _error(chunk, None, "error inside the stream")
        choice = _choice(chunk)
        delta = Delta(usage=_usage(chunk.get("usage")))
        if choice is not None:
            raw = mapping(choice.get("delta"))
            text, calls = raw.get("content"), raw.get("tool_calls")
            reasoning = raw.get("reasoning_content") or raw.get("reasoning")
            delta.reasoning = reasoning if isinstance(reasoning, str) and reasoning else None
            if isinstance(choice.get("finish_reason"), str):
                self._finish = choice["finish_reason"]  # said once, at [DONE]
        else:
            text, calls = chunk.get("response"), chunk.get("tool_calls")
        delta.content = text if isinstance(text, str) and text else None
        delta.tool_calls = self._new_calls(calls) or None
        if not self._started:
            delta.role, self._started = "assistant", True
        return (delta,)

    def _new_calls(self, raw: Any) -> list[ToolCallDelta]:
        calls = _calls(raw, max(self._calls, default=-1) + 1)
        for call in calls:
            if call.index not in self._calls:
                self._calls.add(call.index)
                call.id = call.id or new_call_id()
                call.name = call.name or ""
        return calls


class CloudflareUpstream:
    """Workers AI's native `/ai/run/{model}` endpoint; the upstream model is the full id
    (`@cf/meta/llama-3.1-8b-instruct`).

    JSON mode cannot stream on Workers AI. For a streaming request that asks for json_object
    or json_schema, `streams(request)` is False: HTTPProvider then makes a non-streaming call
    and hands the whole answer on as a stream, and `encode_request(..., stream=True)` itself
    sends `"stream": false` so that no caller can ask Workers AI for what it refuses.
    """

    def __init__(self, account_id: str | None = None, *, max_tokens: int | None = None) -> None:
        self.account_id = account_id
        # Workers AI stops at 256 tokens when no max_tokens is sent: a default to send instead
        self.max_tokens = max_tokens
        self.default_base_url: str | None = (
            DEFAULT_BASE.format(account_id=account_id) if account_id else None
        )

    @staticmethod
    def url(base_url: str, upstream_model: str, stream: bool) -> str:
        return f"{base_url}/{upstream_model.lstrip('/')}"

    @staticmethod
    def auth_headers(api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    @staticmethod
    def streams(request: Request) -> bool:
        """Whether a streaming request can really stream here (not in JSON mode)."""
        return not json_mode(request)

    def encode_request(self, request: Request, upstream_model: str, stream: bool) -> Any:
        body: dict[str, Any] = {"messages": encode_messages(request.messages)}
        if stream:
            body["stream"] = self.streams(request)
        max_tokens = request.max_tokens or self.max_tokens
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        for name in _PASSED_THROUGH:
            if name in request.extra:
                body[name] = request.extra[name]
        # tool_choice has no native field: "none" is honoured by offering no tools
        tools = _tools(request.tools) if request.tool_choice != "none" else []
        if tools:
            body["tools"] = tools
        if json_mode(request):
            body["response_format"] = _response_format(request.response_format or {})
        return body

    decode_response = staticmethod(decode_response)
    decode_error = staticmethod(decode_error)

    @staticmethod
    def stream_decoder() -> CloudflareStreamDecoder:
        return CloudflareStreamDecoder()
