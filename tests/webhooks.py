"""What the sink and alert tests read a gateway's events from: a webhook receiver on a real
port, a JSONL file, and a poll that waits for them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web


class Receiver:
    """A webhook receiver (an aiohttp app: run it with tests.upstreams.serve_app)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()

    def app(self) -> web.Application:
        async def hook(request: web.Request) -> web.Response:
            body = await request.json()
            with self._lock:
                self.bodies.append(body)
                self.paths.append(request.path)
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/{tail:.*}", hook)
        return app

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [body["event"] for body in self.bodies]


def until(what: str, found: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Polls `found()` until it is truthy (and returns it); fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
