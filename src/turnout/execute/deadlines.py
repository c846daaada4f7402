"""Timeouts for the calls on the request path, on one shared coarse timer.

`asyncio.timeout()` arms a loop timer for every call (on uvloop a libuv timer handle is
allocated, started, stopped and closed each time): about 4% of a fast request's CPU in the
bench profile. Here a pending deadline is one dict entry, and a single timer, re-armed every
TICK while any deadline is pending, cancels the tasks whose deadline has passed. A timeout
fires at most TICK late, which is nothing next to the seconds an upstream is given.

The semantics are asyncio.timeout's: the body is cancelled, the CancelledError becomes
TimeoutError at the `async with`, and a cancellation from anywhere else passes through.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

TICK = 0.05  # seconds between sweeps while deadlines are pending


class Deadlines:
    """The pending deadlines of one event loop, and the one timer that expires them. The
    loop is remembered, so entering a deadline costs no get_running_loop() (a getpid()
    system call each time in CPython 3.11)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pending: dict[Deadline, None] = {}  # an insertion-ordered set
        self._timer: asyncio.TimerHandle | None = None

    def timeout(self, delay: float | None) -> Deadline:
        """Like asyncio.timeout(delay), on the shared timer."""
        return Deadline(self, None, delay)

    def timeout_at(self, when: float | None) -> Deadline:
        """Like asyncio.timeout_at(when) (loop time), on the shared timer."""
        return Deadline(self, when)

    def task(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Task]:
        """The running loop and task, cheaply while the loop stays the same."""
        loop = self.loop
        task = asyncio.current_task(loop) if loop is not None else None
        if loop is None or task is None:  # the first use, or a new loop (one per test)
            loop = asyncio.get_running_loop()
            if loop is not self.loop:  # the old loop's deadlines and timer are gone with it
                self.loop = loop
                self.pending.clear()
                self._timer = None
            task = asyncio.current_task(loop)
            if task is None:
                raise RuntimeError("a deadline must be used inside a task")
        return loop, task

    def add(self, deadline: Deadline) -> None:
        self.pending[deadline] = None
        if self._timer is None:
            assert self.loop is not None
            self._timer = self.loop.call_later(TICK, self._sweep)

    def _sweep(self) -> None:
        assert self.loop is not None
        now = self.loop.time()
        for deadline in [d for d in self.pending if d.when <= now]:  # type: ignore[operator]
            deadline.expire()
        self._timer = self.loop.call_later(TICK, self._sweep) if self.pending else None


class Deadline:
    """`async with deadlines.timeout_at(when):` (or a plain `with`, inside a task) the body
    is cut off at loop time `when` (None: never)."""

    __slots__ = ("_cancelling", "_deadlines", "_delay", "_expired", "_task", "when")

    def __init__(
        self, deadlines: Deadlines, when: float | None, delay: float | None = None
    ) -> None:
        self.when = when
        self._deadlines = deadlines
        self._delay = delay
        self._task: asyncio.Task | None = None
        self._cancelling = 0
        self._expired = False

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # entering and leaving never wait: on the hot path a plain `with` saves the two
    # coroutines an `async with` makes
    def __enter__(self) -> Self:
        loop, task = self._deadlines.task()
        self._task = task
        self._cancelling = task.cancelling()
        if self._delay is not None:
            self.when = loop.time() + self._delay
        if self.when is None:
            return self
        if self.when <= loop.time():
            self.expire()  # already past: the body is cancelled at its first await
        else:
            self._deadlines.add(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._deadlines.pending.pop(self, None)
        if not self._expired:
            return
        assert self._task is not None
        if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    def reschedule(self, when: float | None) -> None:
        """Move the deadline, inside its `async with`: a stream's idle limit is pushed on by
        each chunk with a float assignment (no timer handle, no allocation); the shared
        timer's next sweep sees the new time."""
        if self._expired:
            return
        self.when = when
        pending = self._deadlines.pending
        if when is None:
            pending.pop(self, None)
        elif self not in pending:
            self._deadlines.add(self)

    def expire(self) -> None:
        self._deadlines.pending.pop(self, None)
        self._expired = True
        assert self._task is not None
        self._task.cancel()

    @property
    def expired(self) -> bool:
        return self._expired
