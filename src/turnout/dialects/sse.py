"""Server-sent events: an incremental parser for upstream streams, and the framing we send."""

from __future__ import annotations

from dataclasses import dataclass

from turnout.model import ErrorClass, UpstreamError

# The most one event (its line, or its data lines together) may hold. Upstreams send deltas of
# a few bytes to a few KiB, a whole image at most a few MiB; an upstream that sends more
# without an event boundary is broken (or hostile) and must not grow our memory without end.
MAX_EVENT_BYTES = 16 * 1024 * 1024


@dataclass(slots=True)
class SSEEvent:
    data: str
    event: str | None = None


def _too_big() -> UpstreamError:
    return UpstreamError(
        ErrorClass.STREAM_BROKEN,
        f"stream broke: an upstream event over {MAX_EVENT_BYTES // (1024 * 1024)} MiB",
    )


class SSEParser:
    """Feed raw bytes as they arrive; get complete events back. Comment lines are skipped
    (OpenRouter sends `: OPENROUTER PROCESSING` keep-alives). Linear in the bytes fed, however
    they are cut into chunks; an event over MAX_EVENT_BYTES is a broken stream."""

    __slots__ = ("_buffer", "_data", "_data_bytes", "_event", "_scanned")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer already known to hold no newline
        self._data: list[str] = []
        self._data_bytes = 0
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buffer = self._buffer
        buffer += chunk
        events: list[SSEEvent] = []
        start = 0
        while True:
            newline = buffer.find(b"\n", max(start, self._scanned))
            if newline < 0:
                break
            # as the SSE standard decodes: invalid UTF-8 from an upstream becomes U+FFFD
            line = buffer[start:newline].rstrip(b"\r").decode("utf-8", "replace")
            start = newline + 1
            event = self._line(line)
            if event is not None:
                events.append(event)
        del buffer[:start]
        self._scanned = len(buffer)
        if self._scanned > MAX_EVENT_BYTES:
            raise _too_big()
        return events

    def flush(self) -> list[SSEEvent]:
        """End of stream: a last event without its blank line still counts."""
        events = self.feed(b"\n") if self._buffer else []
        if self._data:
            events.append(SSEEvent("\n".join(self._data), self._event))
            self._data, self._event, self._data_bytes = [], None, 0
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event = None
                return None
            event = SSEEvent("\n".join(self._data), self._event)
            self._data, self._event, self._data_bytes = [], None, 0
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data_bytes += len(value)
            if self._data_bytes > MAX_EVENT_BYTES:
                raise _too_big()
            self._data.append(value)
        elif field == "event":
            self._event = value
        return None


def frame(data: bytes, event: str | None = None) -> bytes:
    """One SSE event on the wire."""
    if event:
        return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
    return b"data: " + data + b"\n\n"
