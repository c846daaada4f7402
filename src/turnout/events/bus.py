"""The event bus: one publish per attempt and per request, on the request path, so it must
cost a dict lookup and a loop.

Inline subscribers run inside publish, in order: for the ones that must see every event in
the order it happened and are O(1) and non-blocking (health, the ledger's queue, budgets).
Every other subscriber gets a bounded queue drained by its own asyncio task; when the queue
is full the event is dropped for that subscriber and counted, so a slow subscriber never
slows a request. The task is woken once per batch, `_BATCH` seconds after the first event of
it, never per event: waking a task costs a request's worth of event-loop work (a queued
dashboard subscriber woken per event cost 8% of the gateway's throughput). A subscriber that raises is counted and logged (once per `_LOG_EVERY`
errors), never seen by the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger("turnout.events")

Handler = Callable[[Any], None] | Callable[[Any], Awaitable[None]]
Publish = Callable[[Any], None]
_LOG_EVERY = 1000  # a subscriber failing on every event must not flood the log
_CLOSE_WAIT = 2.0  # seconds close() lets the queues drain before it cancels them
_BATCH = 0.02  # seconds a queued subscriber's events wait to be handed over together


class Subscription:
    """One subscriber: its handler, its counters and, when queued, its queue and task."""

    __slots__ = (
        "_closing",
        "_loop",
        "_pending",
        "_task",
        "_wake",
        "delivered",
        "dropped",
        "errors",
        "handler",
        "inline",
        "max_queue",
        "name",
        "queue",
    )

    def __init__(self, handler: Handler, name: str, inline: bool, max_queue: int) -> None:
        self.handler = handler
        self.name = name
        self.inline = inline
        self.max_queue = max_queue
        self.delivered = 0
        self.dropped = 0
        self.errors = 0
        self.queue: deque[Any] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = False  # a wake-up is scheduled for the events queued so far
        self._closing = False

    def offer(self, event: Any) -> None:
        """Queues `event` for a queued subscriber (EventBus.publish calls inline ones itself)."""
        if len(self.queue) >= self.max_queue:
            self.dropped += 1
            return
        self.queue.append(event)
        if not self._pending and self._loop is not None:
            self._pending = True
            self._loop.call_later(_BATCH, self._wake_up)

    def _wake_up(self) -> None:
        self._pending = False
        if self._wake is not None:
            self._wake.set()

    def failed(self) -> None:
        """Counts a handler's failure (and logs one in every few)."""
        self.errors += 1
        if self.errors % _LOG_EVERY == 1:
            log.exception("event subscriber %s failed (%d errors so far)", self.name, self.errors)

    def start(self) -> None:
        if self.inline or self._task is not None:
            return
        self._wake = asyncio.Event()
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._drain(), name=f"events-{self.name}")
        if self.queue:  # published before the bus started
            self._wake.set()

    async def _drain(self) -> None:
        assert self._wake is not None
        while True:
            while self.queue:
                event = self.queue.popleft()
                try:
                    result = self.handler(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:  # noqa: BLE001 - counted and logged; the queue goes on
                    self.failed()
                else:
                    self.delivered += 1
            if self._closing:
                return
            self._wake.clear()
            await self._wake.wait()

    async def stop(self) -> None:
        """Lets the queue drain (a little while at most), then ends the task."""
        if self._task is None or self._wake is None:
            return
        self._closing = True
        self._wake.set()
        # wait_for cancels the task if the queue is not drained in time
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self._task, _CLOSE_WAIT)
        self._task = None

    def stats(self) -> dict[str, int]:
        return {
            "delivered": self.delivered,
            "dropped": self.dropped,
            "errors": self.errors,
            "queued": len(self.queue),
        }


class EventBus:
    def __init__(self) -> None:
        self.published = 0
        self._subscriptions: list[Subscription] = []
        self._by_kind: dict[type, tuple[Subscription, ...]] = {}
        self._started = False

    def subscribe(
        self,
        handler: Handler,
        *,
        kinds: Iterable[type],
        inline: bool = False,
        max_queue: int = 10_000,
        name: str | None = None,
    ) -> Subscription:
        """`handler(event)` for each event of these classes. Inline handlers must be quick
        and synchronous; a queued handler may be a coroutine function."""
        if inline and inspect.iscoroutinefunction(handler):
            raise ValueError("an inline subscriber must be synchronous")
        label = name or getattr(handler, "__qualname__", None) or repr(handler)
        taken = {s.name for s in self._subscriptions}
        base, n = label, 1
        while label in taken:  # stats() keys subscribers by name: each keeps its own
            n += 1
            label = f"{base}#{n}"
        subscription = Subscription(handler, label, inline, max_queue)
        self._subscriptions.append(subscription)
        for kind in kinds:
            self._by_kind[kind] = (*self._by_kind.get(kind, ()), subscription)
        if self._started:
            subscription.start()
        return subscription

    def publish(self, event: Any) -> None:
        """Hands `event` to its subscribers; never raises, never waits."""
        self.published += 1
        for subscription in self._by_kind.get(type(event), ()):
            # an inline handler called here, not through a method: one call less per
            # subscriber and event, on every request's path
            if subscription.inline:
                try:
                    subscription.handler(event)
                except Exception:  # noqa: BLE001 - a subscriber's failure is never the request's
                    subscription.failed()
                else:
                    subscription.delivered += 1
            else:
                subscription.offer(event)

    async def start(self) -> None:
        """Starts the queued subscribers' tasks (events published before wait in the queues)."""
        self._started = True
        for subscription in self._subscriptions:
            subscription.start()

    async def close(self) -> None:
        self._started = False
        for subscription in self._subscriptions:
            await subscription.stop()

    def stats(self) -> dict[str, Any]:
        """Published events, and per subscriber what it was given, dropped and failed on."""
        return {
            "published": self.published,
            "subscribers": {s.name: s.stats() for s in self._subscriptions},
        }
