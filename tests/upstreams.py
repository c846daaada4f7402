"""Small purpose-built upstreams for behaviour the simulator does not model, run on a real
port in a background thread of the test process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web


@contextmanager
def serve_app(app: web.Application) -> Iterator[int]:
    """Run an aiohttp app on 127.0.0.1 in its own thread and loop; yields its port."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    started = threading.Event()
    port: list[int] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.append(site._server.sockets[0].getsockname()[1])
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield port[0]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def key_echoing_upstream() -> web.Application:
    """Answers 401 the way OpenAI does, echoing part of the key it was sent."""

    async def handler(request: web.Request) -> web.Response:
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        message = f"Incorrect API key provided: {key[:12]}***{key[-4:]}. Full key {key}."
        return web.json_response(
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                    "param": None,
                }
            },
            status=401,
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


def fixed_error_upstream(status: int, error: dict) -> web.Application:
    """Answers every chat completion with one OpenAI-shaped error."""

    async def handler(_: web.Request) -> web.Response:
        return web.json_response({"error": error}, status=status)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


class SharedSim:
    """The simulator on a real port, shared by several gateways and steered by the test
    through its admin API (`/sim/models/{name}`, `/sim/stats`)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def set(self, model: str, **behaviour: object) -> None:
        import json
        import urllib.request

        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/sim/models/{model}",
            data=json.dumps(behaviour).encode(),
            method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def requests(self, model: str) -> int:
        import json
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/sim/stats", timeout=5) as r:
            return json.loads(r.read()).get(model, {}).get("requests", 0)


@contextmanager
def shared_sim(behaviours: dict[str, dict], seed: int = 1) -> Iterator[SharedSim]:
    from turnout.config.schema import SimBehaviour
    from turnout.sim import make_sim_app

    app = make_sim_app({k: SimBehaviour(**v) for k, v in behaviours.items()}, seed)
    with serve_app(app) as port:
        yield SharedSim(port)


def usage_reporting_upstream(usage: dict) -> web.Application:
    """Answers every chat completion with a fixed text and the given usage object."""

    async def handler(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "id": "chatcmpl-fixed",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "fixed"},
                    }
                ],
                "usage": {
                    **usage,
                    "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
                },
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


class CassetteUpstream:
    """Replays recorded provider answers (../shared/vectors) to whatever asks, in order,
    keeping the request bodies it was sent."""

    def __init__(self, interactions: list[dict]) -> None:
        self.interactions = interactions
        self.bodies: list[dict] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        recorded = self.interactions[(len(self.bodies) - 1) % len(self.interactions)]["response"]
        status = recorded["status"]["code"]
        if "parsed_body" in recorded:
            return web.json_response(recorded["parsed_body"], status=status)
        body = recorded["body"]["string"]
        kind = (recorded.get("headers", {}).get("content-type") or ["application/json"])[0]
        if "event-stream" not in kind:
            return web.Response(status=status, body=body, content_type="application/json")
        response = web.StreamResponse(status=status, headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in body.split("\n\n"):
            if event.strip():
                await response.write(event.encode() + b"\n\n")
        await response.write_eof()
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{path:.*}", self.handle)
        return app
