"""The chat requests a gateway is serving right now, so that shutdown can wait for them
through the grace period and then end, in each client's own dialect, those still running.

Ending one is a cancellation of its handler task that the handler recognises (`absorb_cut`)
and answers: an error event on an open stream, a 503 when nothing was sent yet."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

CLIENT_CLOSED = 499  # nginx's status for a client that hung up before its answer


class InFlight:
    """One per server: its chat handlers track their requests in it, and close() drains it."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._cut: set[asyncio.Task[object]] = set()
        self._idle: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._tasks)

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Around one request's handling (in its own task)."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - aiohttp always runs handlers in a task
            yield
            return
        self._tasks.add(task)
        try:
            yield
        finally:
            self._tasks.discard(task)
            self._cut.discard(task)
            if not self._tasks and self._idle is not None:
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
