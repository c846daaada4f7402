"""Server-sent events: an incremental parser for upstream streams, and the framing we send."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SSEEvent:
    data: str
    event: str | None = None


class SSEParser:
    """Feed raw bytes as they arrive; get complete events back. Comment lines are skipped
    (OpenRouter sends `: OPENROUTER PROCESSING` keep-alives)."""

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        events: list[SSEEvent] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                return events
            # as the SSE standard decodes: invalid UTF-8 from an upstream becomes U+FFFD
            line = self._buffer[:newline].rstrip(b"\r").decode("utf-8", "replace")
            self._buffer = self._buffer[newline + 1 :]
            event = self._line(line)
            if event is not None:
                events.append(event)

    def flush(self) -> list[SSEEvent]:
        """End of stream: a last event without its blank line still counts."""
        events = self.feed(b"\n") if self._buffer else []
        if self._data:
            events.append(SSEEvent("\n".join(self._data), self._event))
            self._data, self._event = [], None
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event = None
                return None
            event = SSEEvent("\n".join(self._data), self._event)
            self._data, self._event = [], None
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        return None


def frame(data: bytes, event: str | None = None) -> bytes:
    """One SSE event on the wire."""
    if event:
        return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
    return b"data: " + data + b"\n\n"
