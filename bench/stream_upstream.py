"""A streaming OpenAI-compatible upstream for the benchmark.

`POST /v1/chat/completions` with `stream: true` answers with N `chat.completion.chunk` SSE events
at a fixed spacing (deadlines from the stream's start, so lateness does not accumulate), then a
usage chunk and `data: [DONE]`; a smaller `max_tokens` in the request caps N (one token a chunk).
Without `stream` it answers one static chat.completion.

    python bench/stream_upstream.py --port 18801 --chunks 64 --spacing-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
import uvloop
from aiohttp import web

from serving import serve_until_signalled

CHUNKS = web.AppKey("chunks", int)
SPACING = web.AppKey("spacing", float)


def completion_body(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi!"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16},
        }
    )


def sse(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    payload = orjson.loads(await request.read())
    model = str(payload.get("model", "bench-model"))
    if not payload.get("stream"):
        return web.Response(body=completion_body(model), content_type="application/json")
    chunks, spacing = request.app[CHUNKS], request.app[SPACING]
    max_tokens = payload.get("max_tokens")
    if isinstance(max_tokens, int) and 0 < max_tokens < chunks:
        chunks = max_tokens  # as a model would: the bench's short warm-up streams use this
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000}
    start = time.monotonic()
    for i in range(chunks):
        delay = start + i * spacing - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        delta = {"content": f"tok{i} "}
        if i == 0:
            delta["role"] = "assistant"
        choice = {"index": 0, "delta": delta, "finish_reason": "stop" if i == chunks - 1 else None}
        await resp.write(sse({**base, "model": model, "choices": [choice]}))
    usage = {"prompt_tokens": 14, "completion_tokens": chunks, "total_tokens": 14 + chunks}
    await resp.write(sse({**base, "model": model, "choices": [], "usage": usage}))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def serve(host: str, port: int, chunks: int, spacing_ms: float) -> None:
    app = web.Application()
    app[CHUNKS] = chunks
    app[SPACING] = spacing_ms / 1000.0
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    await serve_until_signalled(app, host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--spacing-ms", type=float, default=100.0)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.chunks, args.spacing_ms))


if __name__ == "__main__":
    main()
