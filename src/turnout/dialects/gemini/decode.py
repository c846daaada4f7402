"""GenerateContentResponse bodies and stream chunks -> Response and Deltas.

https://ai.google.dev/api/generate-content#generatecontentresponse
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from turnout.dialects.gemini.errors import error_from_object
from turnout.dialects.sse import SSEEvent
from turnout.dialects.untrusted import json_text
from turnout.model import Delta, ErrorClass, Response, ToolCall, ToolCallDelta, UpstreamError, Usage

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MODEL_ARMOR": "content_filter",  # Vertex AI's Model Armor templates
}
# the model produced a call it could not express: another model may well manage
_BROKEN = {"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"}


def finish_reason(raw: Any, has_calls: bool) -> str:
    """Gemini's finishReason -> an OpenAI finish_reason. Raises for a broken tool call."""
    name = str(raw or "")
    if name in _BROKEN:
        raise UpstreamError(
            ErrorClass.INVALID_OUTPUT, f"the model's answer ended with {name}", status=200
        )
    reason = _FINISH.get(name, "stop")
    return "tool_calls" if has_calls and reason == "stop" else reason


def decode_usage(raw: Any) -> Usage | None:
    """usageMetadata -> Usage. Thinking is billed output, so it counts as completion; tool-use
    prompt tokens (search results fed back in) are billed input. The sum is totalTokenCount."""
    if not isinstance(raw, Mapping):
        return None

    def count(name: str) -> int:
        value = raw.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    thoughts = count("thoughtsTokenCount")
    return Usage(
        prompt_tokens=count("promptTokenCount") + count("toolUsePromptTokenCount"),
        completion_tokens=count("candidatesTokenCount") + thoughts,
        cached_tokens=count("cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


def new_call_id() -> str:
    # the Gemini API leaves functionCall.id out; clients need one to answer the call
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(slots=True)
class Parts:
    """What one candidate's content parts say."""

    text: list[str] = field(default_factory=list)
    thoughts: list[str] = field(default_factory=list)
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (id, name, arguments)


def read_parts(candidate: Mapping[str, Any]) -> Parts:
    out = Parts()
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, Mapping):
            continue
        if isinstance(part.get("text"), str):
            (out.thoughts if part.get("thought") else out.text).append(part["text"])
        call = part.get("functionCall")
        if isinstance(call, Mapping):
            arguments = json_text(call.get("args") or {})
            call_id = str(call.get("id") or new_call_id())
            out.calls.append((call_id, str(call.get("name") or ""), arguments))
        # executableCode, inlineData, ...: answers to Google's builtin tools, never asked for
    return out


def _candidate(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    candidates = body.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], Mapping):
        return candidates[0]
    return None


def _blocked(body: Mapping[str, Any]) -> bool:
    feedback = body.get("promptFeedback")
    return isinstance(feedback, Mapping) and bool(feedback.get("blockReason"))


def _created(body: Mapping[str, Any]) -> int:
    # Vertex AI says when; the Gemini API does not
    try:
        return int(datetime.fromisoformat(str(body["createTime"])).timestamp())
    except (KeyError, ValueError):
        return int(time.time())


def _loads(body: bytes | str, error_class: ErrorClass, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError(error_class, f"upstream sent {what} that is not JSON") from None


def decode_response(body: bytes) -> Response:
    """A 200 generateContent answer -> Response. An error object or an unusable body raises."""
    parsed = _loads(body, ErrorClass.INVALID_OUTPUT, "an answer")
    if isinstance(parsed, list):
        return _fold(parsed)  # streamGenerateContent without alt=sse: an array of chunks
    if not isinstance(parsed, dict):
        raise UpstreamError(ErrorClass.INVALID_OUTPUT, "upstream answer is not an object")
    if parsed.get("error"):
        raise error_from_object(parsed["error"], None)
    candidate = _candidate(parsed)
    if candidate is None and not _blocked(parsed):
        raise UpstreamError(
            ErrorClass.INVALID_OUTPUT, "upstream answer has no candidates", status=200
        )
    parts = read_parts(candidate or {})
    reason = (
        finish_reason(candidate.get("finishReason"), bool(parts.calls))
        if candidate is not None
        else "content_filter"  # promptFeedback.blockReason: the prompt itself was refused
    )
    return Response(
        id=str(parsed.get("responseId") or ""),
        model=str(parsed.get("modelVersion") or ""),
        content="".join(parts.text) if parts.text else None,
        tool_calls=[ToolCall(*call) for call in parts.calls],
        finish_reason=reason,
        usage=decode_usage(parsed.get("usageMetadata")) or Usage(),
        reasoning="".join(parts.thoughts) or None,
        created=_created(parsed),
    )


def _fold(chunks: list[Any]) -> Response:
    if not all(isinstance(chunk, dict) for chunk in chunks):
        raise UpstreamError(ErrorClass.INVALID_OUTPUT, "upstream answer is not a list of chunks")
    decoder = GeminiStreamDecoder()
    deltas = [delta for chunk in chunks for delta in decoder.chunk(chunk)]  # raises on errors
    if not any(_candidate(chunk) is not None or _blocked(chunk) for chunk in chunks):
        raise UpstreamError(ErrorClass.INVALID_OUTPUT, "upstream chunks hold no answer", status=200)
    calls = [
        ToolCall(call.id or "", call.name or "", call.arguments)
        for delta in deltas
        for call in delta.tool_calls or ()
    ]
    text = [delta.content for delta in deltas if delta.content is not None]
    usage = next((delta.usage for delta in reversed(deltas) if delta.usage is not None), None)
    return Response(
        id=str(chunks[0].get("responseId") or ""),
        model=str(chunks[0].get("modelVersion") or ""),
        content="".join(text) if text else None,
        tool_calls=calls,
        finish_reason=next((d.finish_reason for d in deltas if d.finish_reason), "stop"),
        usage=usage or Usage(),
        reasoning="".join(delta.reasoning or "" for delta in deltas) or None,
        created=_created(chunks[0]),
    )


class GeminiStreamDecoder:
    """`data:` events, each a whole GenerateContentResponse chunk. There is no [DONE]: the
    answer is finished once a finishReason (or a blocked prompt) was seen, and the stream ends
    with the body. Every chunk repeats the running usageMetadata: the last one counts."""

    __slots__ = ("_calls", "_started", "done", "finished")

    def __init__(self) -> None:
        self.done = False
        self.finished = False
        self._calls = 0  # tool calls so far: each new one takes the next index
        self._started = False

    def event(self, event: SSEEvent) -> Iterable[Delta]:
        return self.chunk(_loads(event.data, ErrorClass.STREAM_BROKEN, "a chunk"))

    def chunk(self, chunk: Any) -> Iterable[Delta]:
        if not isinstance(chunk, dict):
            raise UpstreamError(
                ErrorClass.STREAM_BROKEN, "stream sent a chunk that is not an object"
            )
        if chunk.get("error"):
            raise error_from_object(chunk["error"], None)
        delta = Delta(usage=decode_usage(chunk.get("usageMetadata")))
        candidate = _candidate(chunk)
        if candidate is not None:
            parts = read_parts(candidate)
            delta.content = "".join(parts.text) or None
            delta.reasoning = "".join(parts.thoughts) or None
            if parts.calls:
                delta.tool_calls = [
                    ToolCallDelta(self._calls + i, call_id, name, arguments)
                    for i, (call_id, name, arguments) in enumerate(parts.calls)
                ]
                self._calls += len(parts.calls)
            if candidate.get("finishReason"):
                delta.finish_reason = finish_reason(candidate["finishReason"], self._calls > 0)
        elif _blocked(chunk):
            delta.finish_reason = "content_filter"
        if delta.finish_reason:
            self.finished = True
        if not self._started:
            delta.role, self._started = "assistant", True
        return (delta,)
