"""A stream committed to one target: what was buffered before the commit, then the rest.

After the commit each read of the upstream is limited by the target's `timeout.idle` (the
gap between chunks) as well as `total`: one Deadline on the shared timer, moved on by each
chunk, so a stall costs no timer handle per chunk and no polling. A stall is a broken
stream (`stream_broken(idle)`): the relay then asks for a continuation or tells the client.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol

from turnout.execute.accumulate import Accumulator
from turnout.execute.deadlines import Deadlines
from turnout.execute.failures import timeout_error
from turnout.model import Attempt, Delta, ErrorClass, Request, UpstreamError, Usage
from turnout.routing import Plan, Target

# called once when the stream ends: (error or None, usage, the assembled answer if kept)
Finish = Callable[[UpstreamError | None, Usage | None, Accumulator | None], None]


class Checked(Protocol):
    """An output check's verdict on the answer (execute/stream_check.py)."""

    @property
    def verdict(self) -> str | None: ...


class Opener(Protocol):
    """The attempt that opened a stream (execute/attempt.py): what a continuation reads."""

    @property
    def plan(self) -> Plan: ...

    @property
    def request(self) -> Request: ...


class Continues(Protocol):
    """What makes a stream the continuation of another (execute/continuation.py)."""

    @property
    def part(self) -> Any:
        """The continuing model's share, for the ledger (continuation.Part)."""
        ...

    def relayed(self, deltas: AsyncGenerator[Delta, None]) -> AsyncGenerator[Delta, None]:
        """The stream's deltas, less what the client already has."""
        ...


async def close_quietly(source: AsyncIterator[Delta]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        # closing a broken stream may raise again; there is nothing left to do with it
        with contextlib.suppress(Exception):
            await aclose()


def idle_error(idle: float) -> UpstreamError:
    return UpstreamError(
        ErrorClass.STREAM_BROKEN, f"the stream stalled: no chunk for {idle:g}s", detail="idle"
    )


class Sent:
    """What the client has been sent of an answer, across the models that wrote it: the
    text a continuation carries on from, and whether tool calls were (never continued)."""

    __slots__ = ("broke", "pieces", "tool_calls")

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.tool_calls = False
        self.broke: set[str] = set()  # the models whose streams broke: not asked again

    def text(self) -> str:
        return "".join(self.pieces)


async def _no_more() -> AsyncIterator[Delta]:
    return
    yield  # pragma: no cover - makes this an async generator


class Stream:
    def __init__(
        self,
        target: Target,
        attempts: list[Attempt],
        tries: int,
        buffered: list[Delta],
        source: AsyncIterator[Delta] | None = None,
        finish: Finish | None = None,
        deadline: float | None = None,
        keep: bool = False,
        deadlines: Deadlines | None = None,
        stale_age: float | None = None,
        first_token_at: float | None = None,
        check: Checked | None = None,
        opener: Opener | None = None,
    ) -> None:
        self.target = target
        self.attempts = attempts
        self.tries = tries
        self.stale_age = stale_age  # set when this is a stored answer replayed
        # epoch seconds when the scheduler received the first token (the commit): the stream's
        # time to first token is measured there, not when the client is sent what was buffered
        self.first_token_at = first_token_at
        self._buffered = buffered
        self._source = source if source is not None else _no_more()
        self._finish = finish
        self._deadline = deadline
        self._deadlines = deadlines or Deadlines()
        self._accumulator = Accumulator() if keep else None
        self._check = check  # JSON asked for: the answer's check (its deltas pass through it)
        self.sent = Sent()  # the relay notes here what reached the client
        # the plan and request of the attempt that opened this stream: what a continuation
        # needs (execute/continuation.py). Without `opener`, the attempt whose bound method
        # `finish` is.
        opener = opener or getattr(finish, "__self__", None)
        self.plan: Plan | None = getattr(opener, "plan", None)
        self.request: Request | None = getattr(opener, "request", None)
        self.continued: Continues | None = None  # set when this stream continues another
        # the route continues a broken stream: the relay must note what it sent (`sent`)
        self.continuable = self.plan is not None and self.plan.on_stream_break == "continue"

    @property
    def checked(self) -> bool:
        """The answer passes an output check as it streams (JSON asked for)."""
        return self._check is not None

    @property
    def output_check(self) -> str | None:
        """ok | invalid_json | schema_mismatch once the stream ended well; None: unchecked."""
        return self._check.verdict if self._check is not None else None

    def deltas(self) -> AsyncGenerator[Delta, None]:
        """Every delta of the answer. A failure after content was sent raises UpstreamError;
        the caller tells the client explicitly, never a silent truncation. A client that
        goes away (the generator is closed) is not counted against the model. A stream that
        continues another's answer hands on only what is new (execute/continuation.py)."""
        deltas = self._deltas()
        return deltas if self.continued is None else self.continued.relayed(deltas)

    async def _deltas(self) -> AsyncGenerator[Delta, None]:
        usage: Usage | None = None
        error: UpstreamError | None = None
        accumulator = self._accumulator
        idle = self.target.timeouts.idle
        total = self._deadline
        idle_at: float | None = None
        try:
            for delta in self._buffered:
                usage = delta.usage or usage
                if accumulator is not None:
                    accumulator.add(delta)
                yield delta
            async with self._deadlines.timeout_at(total) as limit:
                if idle is None:
                    async for delta in self._source:
                        usage = delta.usage or usage
                        if accumulator is not None:
                            accumulator.add(delta)
                        yield delta
                else:
                    loop, source = self._deadlines.task()[0], self._source
                    while True:
                        # only the upstream's gap counts: while the client is written to
                        # (the yield), the limit is `total` again
                        idle_at = loop.time() + idle
                        limit.reschedule(idle_at if total is None else min(idle_at, total))
                        try:
                            delta = await source.__anext__()
                        except StopAsyncIteration:
                            break
                        idle_at = None
                        limit.reschedule(total)
                        usage = delta.usage or usage
                        if accumulator is not None:
                            accumulator.add(delta)
                        yield delta
        except TimeoutError:
            # the one deadline was the sooner of the two: the idle limit, or `total`
            if idle is not None and idle_at is not None and (total is None or idle_at < total):
                error = idle_error(idle)
            else:
                error = timeout_error("total")
            raise error from None
        except UpstreamError as exc:
            error = exc
            usage = exc.usage or usage
            raise
        finally:
            await close_quietly(self._source)
            if self._finish is not None:
                self._finish(error, usage, accumulator if error is None else None)
