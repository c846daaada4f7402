"""Optional capture of prompts and answers per route (`capture:` on a route; off by
default), redacted before anything is written, one JSON line per request in
`<data_dir>/captures/<route>.jsonl`, so recorded traffic can be replayed against a
candidate model. Writes happen on a background thread, never on the request path."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from turnout.config.schema import CaptureConfig
from turnout.model import Request, Response

log = logging.getLogger("turnout.capture")

BUILT_IN = {
    "email": r"[\w.+-]+@[\w-]+\.[\w.-]+",
    "phone": r"\+?\d[\d ()-]{7,}\d",
    "card": r"\b(?:\d[ -]?){13,19}\b",
    "secret": r"\b(?:sk|tk|pk|rk|ghp|xox[bp])[-_][A-Za-z0-9_-]{12,}\b",
}
REDACTED = "[redacted]"


class Redactor:
    def __init__(self, rules: list[str]) -> None:
        self.pattern = (
            re.compile("|".join(f"(?:{BUILT_IN.get(r, r)})" for r in rules)) if rules else None
        )

    def __call__(self, value: Any) -> Any:
        """The same structure with every matching string part replaced."""
        if self.pattern is None:
            return value
        if isinstance(value, str):
            return self.pattern.sub(REDACTED, value)
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        return value


class Capture:
    def __init__(self, directory: Path, routes: dict[str, CaptureConfig]) -> None:
        self.directory = directory
        self.routes = {name: (config, Redactor(config.redact)) for name, config in routes.items()}
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture")
        self._pending: list[asyncio.Future[None]] = []

    def wants(self, route: str) -> bool:
        entry = self.routes.get(route)
        return entry is not None and random.random() < entry[0].sample

    def record(
        self, row_id: str, route: str, model: str, request: Request, response: Response
    ) -> None:
        _, redact = self.routes[route]
        line = {
            "id": row_id,
            "route": route,
            "model": model,
            "request": redact(
                {
                    "messages": request.messages,
                    "tools": request.tools,
                    "tool_choice": request.tool_choice,
                    "response_format": request.response_format,
                    "temperature": request.temperature,
                    "max_tokens": request.max_tokens,
                }
            ),
            "response": redact(
                {
                    "content": response.content,
                    "tool_calls": [
                        {"id": c.id, "name": c.name, "arguments": c.arguments}
                        for c in response.tool_calls
                    ],
                    "finish_reason": response.finish_reason,
                }
            ),
        }
        path = self.directory / f"{route}.jsonl"
        data = orjson.dumps(line) + b"\n"
        future = asyncio.get_running_loop().run_in_executor(self._thread, _append, path, data)
        self._pending.append(future)
        self._pending = [f for f in self._pending if not f.done()]

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        self._thread.shutdown(wait=True)


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as file:
        file.write(data)
