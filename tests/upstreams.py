"""Small purpose-built upstreams for behaviour the simulator does not model, run on a real
port in a background thread of the test process."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web


@contextmanager
def serve_app(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> Iterator[int]:
    """Run an aiohttp app on 127.0.0.1 in its own thread and loop (over TLS with
    `ssl_context`); yields its port."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    started = threading.Event()
    port: list[int] = []

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
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
    from turnout.sim import make_sim_app
    from turnout.sim.schema import SimBehaviour

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
    """Replays recorded provider answers (tests/data/vectors) to whatever asks, in order,
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


def secret_echoing_upstream() -> web.Application:
    """An upstream that hands back the key it was sent in every way an error can carry it.

    The request's `model` picks the answer:
    - `echo-400`: a 400 with the key in message (whole and masked), code, param and type,
      and in a response header;
    - `echo-stream-first`: a 200 stream whose first event is such an error (status 400);
    - `echo-stream-late`: a 200 stream that sends some text, then such an error event;
    - `echo-401`: a 401 with a masked echo in message and code, as OpenAI words it.
    """

    import json

    def error_object(key: str) -> dict:
        return {
            "message": f"Bad request for key {key[:11]}****{key[-4:]} (sent {key}).",
            "type": f"invalid_request_error:{key}",
            "code": f"key_{key[:14]}***",
            "param": key,
        }

    async def handler(request: web.Request) -> web.StreamResponse:
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        model = (await request.json()).get("model")
        if model == "echo-400":
            return web.json_response(
                {"error": error_object(key)}, status=400, headers={"x-upstream-key": key}
            )
        if model == "echo-401":
            masked = f"{key[:14]}****{key[-4:]}"
            error = {
                "message": f"Incorrect API key provided: {masked}.",
                "type": "invalid_request_error",
                "code": f"invalid_api_key:{masked}",
                "param": None,
            }
            return web.json_response({"error": error}, status=401)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        if model == "echo-stream-late":
            chunk = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "partial"}}],
            }
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        error = {**error_object(key), "status_code": 400}
        await response.write(b"data: " + json.dumps({"error": error}).encode() + b"\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


MODERATION_TRIGGER = "FLAG-ME"


def forbidding_upstream() -> web.Application:
    """An OpenAI-compatible upstream with two kinds of 403, as providers document them:
    a prompt containing MODERATION_TRIGGER gets OpenRouter's moderation refusal (for any
    model), and model `denied` gets OpenAI's "project does not have access to model".
    Everything else is answered with the model's name."""
    import json

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        model = body.get("model")
        if MODERATION_TRIGGER in json.dumps(body.get("messages")):
            error = {
                "code": 403,
                "message": f"{model} requires moderation on Venice. Your input was flagged"
                ' for "harassment". No credits were charged.',
                "metadata": {
                    "reasons": ["harassment"],
                    "flagged_input": f"{MODERATION_TRIGGER}...",
                    "provider_name": "Venice",
                    "model_slug": model,
                },
            }
            return web.json_response({"error": error}, status=403)
        if model == "denied":
            error = {
                "message": "Project `proj_abc` does not have access to model `denied`",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
            return web.json_response({"error": error}, status=403)
        return web.json_response(
            {
                "id": "chatcmpl-ok",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"{model} answered"},
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


# the simulator's Anthropic endpoint takes any key; the gateway refuses to send none
SIM_ANTHROPIC_ENV = {"SIM_ANTHROPIC_KEY": "sk-ant-sim-key-0123456789"}
SIM_CAPABLE = ["tools", "json", "vision"]


def both_dialects(
    sim_url: str, *, openai_model: str = "openai-m", openai_extra: dict | None = None
) -> dict:
    """Providers and models for a simulator reached in both wire formats: `openai_model` on
    its OpenAI endpoint, `claude-m` on its Anthropic one (start the gateway with
    SIM_ANTHROPIC_ENV), so that requests cross from one dialect to the other."""
    return {
        "providers": {
            "compat": {"kind": "openai", "base_url": sim_url},
            "claude": {
                "kind": "anthropic",
                "base_url": sim_url.removesuffix("/v1"),
                "api_key": "${SIM_ANTHROPIC_KEY}",
            },
        },
        "models": {
            openai_model: {"provider": "compat", "supports": SIM_CAPABLE, **(openai_extra or {})},
            "claude-m": {"provider": "claude", "supports": SIM_CAPABLE},
        },
    }
