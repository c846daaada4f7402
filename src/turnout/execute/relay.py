"""After the commit: a stream relayed to its client, and what happens when either end breaks.

The server gives the relay its client end (send the headers, write bytes, recognise the
shutdown ending the request) and the client dialect's encoder; the relay gives the core one
`RelayEnd` when it is over, whatever happened: the upstream broke (the client gets an
explicit error event, never a silent truncation), the client hung up, the shutdown's grace
ran out. A broken upstream is first offered to the scheduler's `continuation`: a stream on
another model that carries on the answer (execute/continuation.py). The client then sees one
stream; the RelayEnd lists the continuing models (`continued`) for the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from turnout import clock
from turnout.dialects.base import StreamEncoder
from turnout.execute.accumulate import Accumulator
from turnout.execute.continuation import Part, total_usage
from turnout.execute.stream import Stream
from turnout.model import UpstreamError, Usage

SHUTTING_DOWN = "the gateway is shutting down; retry the request"


class StreamClient(Protocol):
    """The client end of a stream, as the server hands it over."""

    async def open(self) -> None:
        """Send the answer's headers; ConnectionError when the client has gone."""
        ...

    async def write(self, data: bytes) -> None: ...

    def absorb_cut(self) -> bool:
        """In `except CancelledError`: True when the shutdown ended this request (and the
        cancellation is undone so an error event can still be sent)."""
        ...


@dataclass(slots=True)
class RelayEnd:
    """How a relayed stream ended: what the core accounts for."""

    outcome: str  # ok | stale | stream_failed | client_closed | shutdown
    opened: bool = False  # the client was sent the headers
    # the first model's, as its upstream reported it; None when it never did
    usage: Usage | None = None
    pieces: int = 0  # the first model's content deltas relayed (what an estimate counts)
    first_token_at: float | None = None  # epoch seconds of the stream's first token
    error: str | None = None
    kept: Accumulator | None = None  # the whole answer, when the relay was asked to keep it
    # JSON asked for: ok | invalid_json | schema_mismatch, once the stream ended well
    output_check: str | None = None
    # the models that continued the answer after the first one's stream broke, each with
    # its own usage: the ledger row adds them (Part.record)
    continued: list[Part] = field(default_factory=list)


Continuation = Callable[[Stream, UpstreamError], Awaitable[Stream | None]]
Settle = Callable[[Usage], None]  # prices the usage before the closing events carry it
OnEnd = Callable[[RelayEnd], None]


class Relay:
    """One committed stream on its way to one client; `run()` once."""

    def __init__(
        self,
        stream: Stream,
        continuation: Continuation,
        settle: Settle,
        on_end: OnEnd,
        keep: bool = False,
    ) -> None:
        self.stream = stream
        self._continuation = continuation
        self._settle = settle
        self._on_end = on_end
        self._keep = keep

    async def run(self, client: StreamClient, encoder: StreamEncoder) -> None:
        end = RelayEnd("client_closed", first_token_at=self.stream.first_token_at)
        try:
            await self._run(client, encoder, end)
        finally:
            self._on_end(end)

    async def _run(self, client: StreamClient, encoder: StreamEncoder, end: RelayEnd) -> None:
        try:
            await client.open()
        except ConnectionError:
            # the client left while the upstream was getting ready: close what was opened
            await self._abandon()
            return
        end.opened = True
        kept = Accumulator() if self._keep else None
        stream = self.stream
        try:
            if opening := encoder.start():
                await client.write(opening)
            while True:
                try:
                    await self._pump(stream, client, encoder, end, kept)
                    break
                except UpstreamError as exc:
                    if exc.usage is not None:  # the upstream said what was spent: no estimate
                        if stream.continued is None:
                            end.usage = exc.usage
                        else:
                            stream.continued.part.usage = exc.usage
                    replacement = await self._continuation(stream, exc)
                    if replacement is None:
                        raise
                    if replacement.continued is not None:
                        end.continued.append(replacement.continued.part)
                    stream = replacement
            end.outcome = "stale" if stream.stale_age is not None else "ok"
            end.kept = kept
            end.output_check = stream.output_check
            if end.usage is not None:
                self._settle(end.usage)  # the first model's part (the row's price)
            usage = end.usage
            if end.continued:  # every model's part, summed
                usage = total_usage(self.stream, usage, end.pieces, end.continued)
            await client.write(encoder.finish(usage))
        except UpstreamError as exc:
            # content already reached the client: say so explicitly, never truncate silently
            end.outcome, end.error = "stream_failed", exc.message[:300]
            message = f"the upstream stream failed after it started: {exc.message}"
            with contextlib.suppress(ConnectionError):  # the client may be gone too
                await client.write(encoder.error(502, message, exc.error_class.value))
        except ConnectionError:
            end.outcome = "client_closed"  # the client hung up mid-stream
        except asyncio.CancelledError:
            if not client.absorb_cut():
                raise
            # the shutdown grace ran out mid-stream: an explicit error event, then the body
            # ends properly (aiohttp writes the last chunk when the handler returns)
            end.outcome, end.error = "shutdown", SHUTTING_DOWN
            with contextlib.suppress(ConnectionError):
                await client.write(encoder.error(503, SHUTTING_DOWN, "gateway_shutting_down"))

    @staticmethod
    async def _pump(
        stream: Stream,
        client: StreamClient,
        encoder: StreamEncoder,
        end: RelayEnd,
        kept: Accumulator | None,
    ) -> None:
        first = stream.continued is None  # (a continuation's usage goes to its Part)
        sent = stream.sent if stream.continuable else None  # what a continuation carries on
        async with contextlib.aclosing(stream.deltas()) as deltas:
            async for delta in deltas:
                if kept is not None:
                    kept.add(delta)
                if delta.has_content:
                    if end.first_token_at is None:  # a stored answer replayed: its first token
                        end.first_token_at = clock.now()
                    end.pieces += first if delta.content else 0
                    if sent is not None:
                        if delta.content:
                            sent.pieces.append(delta.content)
                        if delta.tool_calls:
                            sent.tool_calls = True
                if delta.usage is not None and first:
                    end.usage = delta.usage
                if event := encoder.delta(delta):
                    await client.write(event)

    async def _abandon(self) -> None:
        """Close a committed stream nobody will read (the upstream call is released)."""
        async with contextlib.aclosing(self.stream.deltas()) as deltas:
            async for _ in deltas:
                break  # starting it is enough: closing it then releases the upstream
