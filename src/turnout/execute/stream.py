"""A stream committed to one target: what was buffered before the commit, then the rest."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from turnout.execute.accumulate import Accumulator
from turnout.execute.deadlines import Deadlines
from turnout.execute.failures import timeout_error
from turnout.model import Attempt, Delta, UpstreamError, Usage
from turnout.routing import Target

# called once when the stream ends: (error or None, usage, the assembled answer if kept)
Finish = Callable[[UpstreamError | None, Usage | None, Accumulator | None], None]


async def close_quietly(source: AsyncIterator[Delta]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        # closing a broken stream may raise again; there is nothing left to do with it
        with contextlib.suppress(Exception):
            await aclose()


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

    async def deltas(self) -> AsyncGenerator[Delta, None]:
        """Every delta of the answer. A failure after content was sent raises UpstreamError;
        the caller tells the client explicitly, never a silent truncation. A client that
        goes away (the generator is closed) is not counted against the model."""
        usage: Usage | None = None
        error: UpstreamError | None = None
        accumulator = self._accumulator
        try:
            for delta in self._buffered:
                usage = delta.usage or usage
                if accumulator is not None:
                    accumulator.add(delta)
                yield delta
            async with self._deadlines.timeout_at(self._deadline):
                async for delta in self._source:
                    usage = delta.usage or usage
                    if accumulator is not None:
                        accumulator.add(delta)
                    yield delta
        except TimeoutError:
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
