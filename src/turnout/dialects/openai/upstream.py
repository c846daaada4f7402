"""Provider side of the OpenAI dialect: the body we send an OpenAI-compatible upstream and how
we read its answers, stream chunks and errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from turnout.dialects.classify import (
    class_for_status,
    flagged_by_moderation,
    mentions_context_length,
    retry_after,
)
from turnout.dialects.gemini.errors import error_from_object as google_error
from turnout.dialects.sse import SSEEvent
from turnout.dialects.untrusted import count, items, json_text, mapping, number, text
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


def encode_request(request: Request, upstream_model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {**request.extra, "model": upstream_model, "messages": request.messages}
    if stream:
        body["stream"] = True
        # always ask for usage: accounting needs it even when the client did not
        body["stream_options"] = {"include_usage": True}
    if request.max_tokens is not None and "max_completion_tokens" not in body:
        body["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = request.stop
    if request.tools:
        body["tools"] = request.tools
    if request.tool_choice is not None:
        body["tool_choice"] = request.tool_choice
    if request.response_format is not None:
        body["response_format"] = request.response_format
    if request.user is not None:
        body["user"] = request.user
    return body


def _count(value: Any) -> int:
    """count(), the usual absent field first: usage is read on every answer's path."""
    return 0 if value is None else count(value)


def decode_usage(raw: Any) -> Usage | None:
    if not raw or not (type(raw) is dict or isinstance(raw, Mapping)):
        return None
    get = raw.get
    prompt = count(get("prompt_tokens"))
    completion = count(get("completion_tokens"))
    # absent details (the usual case) skip mapping()'s check against the Mapping ABC
    details = get("prompt_tokens_details")
    # DeepSeek reports cache hits as prompt_cache_hit_tokens
    cached = (None if details is None else mapping(details).get("cached_tokens")) or get(
        "prompt_cache_hit_tokens"
    )
    details = get("completion_tokens_details")
    reasoning = 0 if details is None else _count(mapping(details).get("reasoning_tokens"))
    # Gemini's OpenAI endpoint leaves thinking out of completion_tokens but counts (and bills)
    # it in total_tokens: the gap is output the model spent thinking
    total = get("total_tokens")
    hidden = count(total) - prompt - completion if total is not None else 0
    if hidden > 0:
        completion += hidden
        reasoning = max(reasoning, hidden)
    cost = get("cost")
    if cost is not None:
        cost = number(cost)
        if cost is not None and cost < 0:
            cost = None
    return Usage(prompt, completion, _count(cached), reasoning, cost)


def _reasoning(message: Mapping[str, Any]) -> str | None:
    # DeepSeek and vLLM say reasoning_content; OpenRouter and Groq say reasoning
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _parts(parts: Any, kind: str) -> list[dict[str, Any]]:
    if not isinstance(parts, list):
        return []
    return [part for part in parts if isinstance(part, dict) and part.get("type") == kind]


def _text(parts: Any) -> str:
    return "".join(str(part.get("text") or "") for part in _parts(parts, "text"))


def _content(message: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(content, reasoning) of a message or a stream delta.

    Mistral's reasoning models send content as a list of parts: `text` parts are the answer,
    `thinking` parts (each a list of text parts) are the reasoning.
    """
    content = message.get("content")
    reasoning = _reasoning(message)
    if not isinstance(content, list):
        return (content if isinstance(content, str) else None), reasoning
    text = _text(content)
    thinking = "".join(_text(part.get("thinking")) for part in _parts(content, "thinking"))
    return text or None, (reasoning or "") + thinking or None


def _error_from_object(error: Any, status: int | None) -> UpstreamError:
    """An `error` object, whether in an error body or inside a 200 answer or stream."""
    if not isinstance(error, dict):
        return UpstreamError(ErrorClass.SERVER_ERROR, str(error)[:500], status=status)
    if isinstance(error.get("status"), str) and error["status"].isupper():
        # Gemini's OpenAI-compatible endpoint sends Google's error object: read it as such
        # (an invalid key is a 400 there, per-day quotas are 429s, retryDelay says when)
        return google_error(error, status)
    message = str(error.get("message") or "upstream error")
    code = error.get("code")
    inner_status = error.get("status_code") or (code if isinstance(code, int) else None)
    effective = status if status and status >= 400 else inner_status
    code_text = code if isinstance(code, str) else None
    error_type = error.get("type") if isinstance(error.get("type"), str) else None
    metadata = error.get("metadata")
    if flagged_by_moderation(metadata):
        # OpenRouter's moderation refused this input: the client's, whatever the status
        error_class = ErrorClass.CLIENT_ERROR
    elif code_text == "insufficient_quota" or error_type == "insufficient_quota":
        error_class = ErrorClass.QUOTA
    elif code_text == "tool_use_failed":
        # the model produced an invalid tool call: another model may well succeed
        error_class = ErrorClass.INVALID_OUTPUT
    elif code_text == "context_length_exceeded" or mentions_context_length(message):
        error_class = ErrorClass.CONTEXT_LENGTH
    elif isinstance(effective, int) and effective >= 400:
        error_class = class_for_status(effective, message, code_text, error_type)
    else:
        error_class = ErrorClass.SERVER_ERROR
    if isinstance(metadata, dict) and isinstance(metadata.get("raw"), str):
        message = f"{message}: {metadata['raw']}"
    return UpstreamError(
        error_class,
        message,
        status=effective if isinstance(effective, int) else None,
        error_type=error_type,
        code=code_text,
        param=error.get("param") if isinstance(error.get("param"), str) else None,
    )


def decode_error(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """A non-2xx answer -> a classified UpstreamError."""
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        parsed = parsed[0]  # Gemini's OpenAI endpoint wraps its error in an array
    if isinstance(parsed, dict) and "error" in parsed:
        error = _error_from_object(parsed["error"], status)
        error.status = status
        if error.error_class is ErrorClass.SERVER_ERROR and status < 500:
            error.error_class = class_for_status(status, error.message, error.code)
    else:
        text = body.decode("utf-8", "replace").strip()[:300] or f"HTTP {status}"
        error_class = class_for_status(status, text)
        if error_class is ErrorClass.CLIENT_ERROR and mentions_context_length(text):
            error_class = ErrorClass.CONTEXT_LENGTH
        error = UpstreamError(error_class, text, status=status)
    error.retry_after = retry_after(headers)
    return error


def _parsed(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError(
            ErrorClass.INVALID_OUTPUT, "upstream returned a body that is not JSON", status=200
        ) from None


def decode_response(body: bytes) -> Response:
    """A 200 answer -> Response. An error object or an unusable body raises UpstreamError."""
    return _decoded(_parsed(body))


def _decoded(parsed: Any) -> Response:
    if not isinstance(parsed, dict):
        raise UpstreamError(ErrorClass.INVALID_OUTPUT, "upstream answer is not an object")
    if parsed.get("error"):
        raise _error_from_object(parsed["error"], None)
    choices = parsed.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamError(ErrorClass.INVALID_OUTPUT, "upstream answer has no choices", status=200)
    choice = choices[0]
    message = mapping(choice.get("message"))
    tool_calls = [
        ToolCall(
            id=text(call.get("id")) or f"call_{i}",
            name=text(mapping(call.get("function")).get("name")) or "",
            # OpenRouter leaves `arguments` out when a tool is called with none: "{}" is what
            # clients can parse
            arguments=_arguments(mapping(call.get("function")).get("arguments")) or "{}",
        )
        for i, call in enumerate(items(message.get("tool_calls")))
        if isinstance(call, Mapping)
    ]
    content, reasoning = _content(message)
    return Response(
        id=text(parsed.get("id")) or "",
        model=text(parsed.get("model")) or "",
        content=content,
        tool_calls=tool_calls,
        finish_reason=text(choice.get("finish_reason")) or ("tool_calls" if tool_calls else "stop"),
        usage=decode_usage(parsed.get("usage")) or Usage(),
        reasoning=reasoning,
        created=count(parsed.get("created")),
    )


def pass_through(body: bytes) -> Response:
    """A 200 answer for a client that speaks this same format: a Response carrying the
    upstream's object (`raw`) for the client's encoder to send back as it is, with only the
    usage (for the ledger), the finish reason, id and created decoded. A body that the full
    decode would change in any field the client sees today (a reasoning model's content
    parts, a tool call without an id, an error object, no choices) is decoded in full
    instead, so the client gets a superset of today's answer and today's error handling.
    Every answer of every request takes this path: each check here is paid per request."""
    parsed = _parsed(body)
    choice = _plain_choice(parsed)
    if choice is None:
        return _decoded(parsed)
    usage = decode_usage(parsed.get("usage")) or Usage()
    return Response(
        parsed["id"],
        "",
        None,
        [],
        choice["finish_reason"],
        usage,
        created=parsed["created"],
        raw=parsed,
    )


def decoded(answer: dict[str, Any], usage: Usage) -> Response:
    """A passed-through answer decoded in full after all, keeping its usage (priced)."""
    response = _decoded(answer)
    response.usage = usage
    return response


def _plain_choice(parsed: Any) -> dict[str, Any] | None:
    """The one choice of a plain chat completion, whose every field the client sees today a
    full decode and re-encode would send unchanged; else None. Fills in the two fields a
    re-encode always writes (logprobs, content) and names `reasoning` as today's clients
    read it (reasoning_content)."""
    if type(parsed) is not dict:
        return None
    choices = parsed.get("choices")
    if type(choices) is not list or len(choices) != 1:
        return None
    choice = choices[0]
    if type(choice) is not dict:
        return None
    message = choice.get("message")
    if type(message) is not dict:
        return None
    created, finish_reason = parsed.get("created"), choice.get("finish_reason")
    content = message.setdefault("content", None)  # Cerebras leaves it out of tool calls
    choice.setdefault("logprobs", None)
    if (
        parsed.get("object") != "chat.completion"
        or parsed.get("error")
        or type(parsed.get("id")) is not str
        or type(created) is not int
        or count(created) != created
        or choice.get("index") != 0
        or type(finish_reason) is not str
        or not finish_reason
        or message.get("role") != "assistant"
        or (content is not None and type(content) is not str)  # Mistral's parts: decode
    ):
        return None
    reasoning = message.get("reasoning_content")
    if reasoning is not None and type(reasoning) is not str:
        return None
    if not reasoning:
        reasoning = message.get("reasoning")
        if reasoning and type(reasoning) is str:
            message["reasoning_content"] = reasoning  # OpenRouter and Groq say `reasoning`
    calls = message.get("tool_calls")
    if calls and not (type(calls) is list and all(map(_plain_call, calls))):
        return None
    return choice


def _plain_call(call: Any) -> bool:
    """A tool call the full decode would re-encode unchanged: id, type, name, text arguments."""
    if type(call) is not dict or call.get("type") != "function":
        return False
    function = call.get("function")
    if type(function) is not dict or type(function.get("name")) is not str:
        return False
    arguments, call_id = function.get("arguments"), call.get("id")
    return type(arguments) is str and bool(arguments) and type(call_id) is str and bool(call_id)


def _arguments(raw: Any, error_class: ErrorClass = ErrorClass.INVALID_OUTPUT) -> str:
    """A call's arguments as JSON text: some hosts send the object itself."""
    if raw is None or isinstance(raw, str):
        return raw or ""
    return json_text(raw, error_class)


def _index(raw: Any, default: int) -> int:
    return (
        raw if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < 2**31 else default
    )


def decode_chunk(data: str) -> Delta | None:
    """One `data:` payload of a stream -> Delta, or None for `[DONE]`.

    An error object inside a 200 stream raises UpstreamError (OpenRouter, Groq do this).
    """
    if data == "[DONE]":
        return None
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamError(
            ErrorClass.STREAM_BROKEN, "stream sent a chunk that is not JSON"
        ) from None
    if not isinstance(chunk, dict):
        raise UpstreamError(ErrorClass.STREAM_BROKEN, "stream sent a chunk that is not an object")
    if chunk.get("error"):
        error = _error_from_object(chunk["error"], None)
        error.usage = decode_usage(chunk.get("usage"))  # what was spent before it failed
        raise error
    # Groq's streams may carry the usage only in x_groq.usage of the last chunk
    usage = chunk.get("usage") or mapping(chunk.get("x_groq")).get("usage")
    delta = Delta(usage=decode_usage(usage))
    choices = items(chunk.get("choices"))
    if choices:
        choice = mapping(choices[0])
        raw = mapping(choice.get("delta"))
        content, reasoning = _content(raw)
        delta.role = text(raw.get("role"))
        delta.content = content or None
        delta.reasoning = reasoning
        delta.finish_reason = text(choice.get("finish_reason"))
        calls = [call for call in items(raw.get("tool_calls")) if isinstance(call, Mapping)]
        if calls:
            delta.tool_calls = [
                ToolCallDelta(
                    index=_index(call.get("index"), i),
                    id=text(call.get("id")),
                    name=text(mapping(call.get("function")).get("name")),
                    arguments=_arguments(
                        mapping(call.get("function")).get("arguments"), ErrorClass.STREAM_BROKEN
                    ),
                )
                for i, call in enumerate(calls)
            ]
    return delta


class OpenAIStreamDecoder:
    """`data:` chunks until `[DONE]`; an error object inside the stream raises."""

    __slots__ = ("done", "finished")

    def __init__(self) -> None:
        self.done = False
        self.finished = False

    def event(self, event: SSEEvent) -> Iterable[Delta]:
        delta = decode_chunk(event.data)
        if delta is None:
            self.done = self.finished = True
            return ()
        if delta.finish_reason:
            self.finished = True
        return (delta,)


class OpenAIUpstream:
    """Any OpenAI-compatible Chat Completions upstream."""

    default_base_url = None  # there is no default: every OpenAI-compatible host differs
    # the client wire format (an IngressDialect's name) this upstream's answers already are:
    # HTTPProvider hands them to such a client through `pass_through` (Call.pass_through)
    answer_format = "openai"

    @staticmethod
    def prefilled(request: Request, text: str) -> Request:
        """`request` with `text` as the start of the answer, to be continued: the extension
        of vLLM and SGLang (and Hugging Face chat templates), for models whose config says
        `supports: [prefill]` (OpenAI itself refuses these fields)."""
        messages = [*request.messages, {"role": "assistant", "content": text}]
        extra = {**request.extra, "continue_final_message": True, "add_generation_prompt": False}
        return dataclasses.replace(request, messages=messages, extra=extra)

    @staticmethod
    def url(base_url: str, upstream_model: str, stream: bool) -> str:
        return base_url + "/chat/completions"

    @staticmethod
    def auth_headers(api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    encode_request = staticmethod(encode_request)
    decode_response = staticmethod(decode_response)
    pass_through = staticmethod(pass_through)
    decode_error = staticmethod(decode_error)

    @staticmethod
    def stream_decoder() -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder()


UPSTREAM = OpenAIUpstream()
