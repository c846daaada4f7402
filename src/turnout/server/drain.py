"""The chat requests a gateway is serving right now, so that shutdown can wait for them
through the grace period and then end, in each client's own dialect, those still running.

Ending one is a cancellation of its handler task that the handler recognises (`absorb_cut`)
and answers: an error event on an open stream, a 503 when nothing was sent yet."""

from __future__ import annotations

import asyncio
import contextlib


class InFlight:
    """One per server: its chat handlers track their requests in it, and close() drains it."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._cut: set[asyncio.Task[object]] = set()
        self._idle: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._tasks)

    def enter(self) -> asyncio.Task[object] | None:
        """A request's handling starts (in its own task); pair with leave() in a finally.
        Two calls rather than a context manager: this is on every request's path. The loop
        is named, because finding the running loop costs a getpid() on Python 3.11."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(self._loop)
        if task is not None:  # (aiohttp always runs handlers in a task)
            self._tasks.add(task)
        return task

    def leave(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self._tasks.discard(task)
            self._cut.discard(task)
        if self._idle is not None and not self._tasks:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight, at most `timeout` seconds; True if none is."""
        if not self._tasks:
            return True
        self._idle = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return not self._tasks

    def cut_all(self) -> int:
        """The grace is over: interrupt every request still in flight; how many."""
        for task in self._tasks:
            if not task.done():
                self._cut.add(task)
                task.cancel("the gateway is shutting down")
        return len(self._cut)

    def absorb_cut(self) -> bool:
        """In a handler's `except CancelledError`: True when this is the shutdown ending the
        request (the cancellation is then undone, so the handler can still answer); False
        for any other cancellation, which the handler re-raises."""
        task = asyncio.current_task()
        if task is None or task not in self._cut:
            return False
        self._cut.discard(task)
        task.uncancel()
        return True
