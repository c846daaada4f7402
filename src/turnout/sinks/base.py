"""What every sink kind is: something that delivers a batch of exported events, or raises."""

from __future__ import annotations

from typing import Protocol

from turnout.sinks.exported import Exported


class SinkError(Exception):
    """A delivery failed in a way the sink itself noticed (an HTTP 500, a refused publish).
    Its message is the sink's own words, never a URL or a credential."""


class Sink(Protocol):
    # the most events one `send` takes (None: the config's `batch`); a webhook takes one, so
    # a retry never re-sends an event that went through
    max_batch: int | None

    async def send(self, events: list[Exported]) -> None:
        """Delivers every event or raises; connects on first use and after a failure."""
        ...

    async def close(self) -> None: ...
