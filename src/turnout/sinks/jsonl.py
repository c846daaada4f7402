"""Sink kind `jsonl`: one JSON object per line, appended to a file (a batch in one write)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from turnout.config.sinks import JsonlSinkConfig
from turnout.sinks.exported import Exported


class JsonlSink:
    max_batch: int | None = None

    def __init__(self, config: JsonlSinkConfig) -> None:
        self.path = Path(config.path).expanduser()

    async def send(self, events: list[Exported]) -> None:
        data = b"".join(event.json() + b"\n" for event in events)
        # a file write can block (a slow disk, NFS): off the event loop
        await asyncio.to_thread(self._append, data)

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as file:  # opened per batch: a rotated file is followed
            file.write(data)

    async def close(self) -> None:
        return None
