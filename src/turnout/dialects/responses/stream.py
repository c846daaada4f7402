"""Deltas -> the Responses API's named SSE events, each with its `sequence_number`.

response.created and response.in_progress open the stream; each output item is announced
(`response.output_item.added`), filled (a content part and its text deltas, or a function
call's argument deltas) and closed (`.done` events, then `response.output_item.done`); the
stream ends with response.completed (or response.incomplete when the answer was cut short),
whose `response` holds every item whole, as a non-streamed answer would. A failure after the
stream began is an `error` event followed by `response.failed`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from turnout.dialects.responses import encode
from turnout.dialects.responses.encode import Json
from turnout.dialects.sse import frame
from turnout.model import Delta, ToolCallDelta, Usage


@dataclass(slots=True)
class _Item:
    """One output item as the stream builds it."""

    kind: str  # message | reasoning | function_call
    id: str
    index: int  # its output_index
    text: str = ""  # the message's text, the reasoning's text, or the call's arguments
    call_id: str = ""
    name: str = ""
    status: str = "in_progress"  # until it is closed: completed, or incomplete when cut

    @property
    def done(self) -> bool:
        return self.status != "in_progress"

    def json(self, status: str) -> Json:
        if self.kind == "message":
            content = [encode.output_text(self.text)] if status != "in_progress" else []
            return encode.message_item(self.id, content, status)
        if self.kind == "reasoning":
            parts = [encode.reasoning_text(self.text)] if status != "in_progress" else []
            return encode.reasoning_item(self.id, parts, status)
        arguments = self.text if status != "in_progress" else ""
        return encode.function_call_item(self.id, self.call_id, self.name, arguments, status)


class ResponsesStreamEncoder:
    """One client stream's events. Stateful: one per stream."""

    __slots__ = (
        "_created",
        "_finish",
        "_id",
        "_items",
        "_model",
        "_open",
        "_sequence",
        "_tools",
        "_usage",
    )

    def __init__(self, model: str, response_id: str, created: float) -> None:
        self._model = model
        self._id = response_id
        self._created = created
        self._sequence = 0
        self._items: list[_Item] = []
        self._open: _Item | None = None  # the open message or reasoning item
        self._tools: dict[int, _Item] = {}  # a chat tool call's index -> its item
        self._finish: str | None = None
        self._usage: Usage | None = None

    # --- framing -------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return frame(orjson.dumps(data), kind)

    # --- items ---------------------------------------------------------------------------------

    def _add(self, item: _Item) -> bytes:
        self._items.append(item)
        return self._event(
            "response.output_item.added", output_index=item.index, item=item.json("in_progress")
        )

    def _begin_part(self, kind: str, prefix: str) -> bytes:
        """A new message or reasoning item with its one content part: closes what is open."""
        closing = self._close_all()
        item = self._open = _Item(kind, encode.new_id(prefix), len(self._items))
        added = self._add(item)
        part = encode.output_text("") if kind == "message" else encode.reasoning_text("")
        return (
            closing
            + added
            + self._event("response.content_part.added", **self._at(item), part=part)
        )

    @staticmethod
    def _at(item: _Item) -> Json:
        return {"item_id": item.id, "output_index": item.index, "content_index": 0}

    def _close(self, item: _Item, status: str) -> bytes:
        if item.done:
            return b""
        item.status = status
        out: list[bytes] = []
        if item.kind == "message":
            at = self._at(item)
            out.append(self._event("response.output_text.done", **at, text=item.text, logprobs=[]))
            part = encode.output_text(item.text)
            out.append(self._event("response.content_part.done", **at, part=part))
        elif item.kind == "reasoning":
            at = self._at(item)
            out.append(self._event("response.reasoning_text.done", **at, text=item.text))
            part = encode.reasoning_text(item.text)
            out.append(self._event("response.content_part.done", **at, part=part))
        else:
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item.id,
                    output_index=item.index,
                    name=item.name,
                    arguments=item.text,
                )
            )
        item_json = item.json(status)
        out.append(
            self._event("response.output_item.done", output_index=item.index, item=item_json)
        )
        return b"".join(out)

    def _close_open(self) -> bytes:
        item, self._open = self._open, None
        return self._close(item, "completed") if item is not None else b""

    def _close_all(self, status: str = "completed") -> bytes:
        self._open = None
        return b"".join(self._close(item, status) for item in self._items)

    def _call(self, call: ToolCallDelta) -> bytes:
        out: list[bytes] = []
        item = self._tools.get(call.index)
        if item is None:
            out.append(self._close_open())  # calls follow the text; earlier calls stay open
            item = _Item("function_call", encode.new_id("fc"), len(self._items))
            item.call_id = call.id or f"call_{call.index}"
            item.name = call.name or ""
            out.append(self._add(item))  # names the call as it is known now
            self._tools[call.index] = item
        elif call.name and not item.name:
            item.name = call.name
        if call.arguments:
            item.text += call.arguments
            delta = {"item_id": item.id, "output_index": item.index, "delta": call.arguments}
            out.append(self._event("response.function_call_arguments.delta", **delta))
        return b"".join(out)

    # --- the StreamEncoder protocol ------------------------------------------------------------

    def start(self) -> bytes:
        created = encode.envelope(self._id, self._created, self._model, "in_progress", [], None)
        return self._event("response.created", response=created) + self._event(
            "response.in_progress", response=created
        )

    def delta(self, delta: Delta) -> bytes:
        out: list[bytes] = []
        if delta.reasoning:
            if self._open is None or self._open.kind != "reasoning":
                out.append(self._begin_part("reasoning", "rs"))
            assert self._open is not None
            self._open.text += delta.reasoning
            fields = self._at(self._open)
            out.append(
                self._event("response.reasoning_text.delta", **fields, delta=delta.reasoning)
            )
        if delta.content:
            if self._open is None or self._open.kind != "message":
                out.append(self._begin_part("message", "msg"))
            assert self._open is not None
            self._open.text += delta.content
            fields = self._at(self._open)
            event = self._event(
                "response.output_text.delta", **fields, delta=delta.content, logprobs=[]
            )
            out.append(event)
        for call in delta.tool_calls or ():
            out.append(self._call(call))
        if delta.finish_reason:
            self._finish = delta.finish_reason
        if delta.usage is not None:
            self._usage = delta.usage
        return b"".join(out)

    def finish(self, usage: Usage | None) -> bytes:
        if usage is not None:
            self._usage = usage
        incomplete = encode.incomplete_reason(self._finish)
        status = "incomplete" if incomplete else "completed"
        closing = self._close_all(status)
        if incomplete:
            final = self._envelope_final(status, incomplete=incomplete)
            return closing + self._event("response.incomplete", response=final)
        return closing + self._event("response.completed", response=self._envelope_final(status))

    def _envelope_final(self, status: str, **extra: Any) -> Json:
        # an item keeps the status it was closed with; one still open takes `status`
        output = [item.json(item.status if item.done else status) for item in self._items]
        return encode.envelope(
            self._id, self._created, self._model, status, output, self._usage, **extra
        )

    def error(self, status: int, message: str, code: str) -> bytes:
        # what was sent so far stays in the failed response, cut short ("incomplete")
        failure = self._event("error", code=code, message=message, param=None)
        error = {"code": "server_error", "message": message}
        failed = self._envelope_final("incomplete") | {"status": "failed", "error": error}
        return failure + self._event("response.failed", response=failed)
