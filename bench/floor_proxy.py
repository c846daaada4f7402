"""The Python floor: a minimal aiohttp pass-through proxy for OpenAI chat completions.

It does the least a Python gateway must do: uvloop, parse the JSON body with orjson, forward it
on one pooled keep-alive aiohttp ClientSession and return the upstream body (relaying a
`stream: true` answer chunk by chunk). turnout is compared with this.

    python bench/floor_proxy.py --port 18802 --upstream http://127.0.0.1:18801

With `--client keepalive` (bench/run.py's system `floor-keepalive`) a whole answer travels
over turnout's own upstream client (turnout.providers.keepalive) instead of the
ClientSession: the floor for a gateway that made the same choice turnout made, so that what
separates turnout from it is turnout's own work.
"""

from __future__ import annotations

import argparse

import aiohttp
import orjson
import uvloop
import yarl
from aiohttp import web

from serving import serve_until_signalled

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)
KEEPALIVE = web.AppKey("keepalive", object)  # turnout's KeepAliveClient, with --client keepalive
JSON_HEADERS = {"Content-Type": "application/json"}


async def chat(request: web.Request) -> web.StreamResponse:
    payload = orjson.loads(await request.read())
    session = request.app[SESSION]
    url = request.app[UPSTREAM] + "/v1/chat/completions"
    keepalive = request.app.get(KEEPALIVE)
    if keepalive is not None and not payload.get("stream"):
        answer = await keepalive.post(yarl.URL(url), orjson.dumps(payload), 5.0)
        return web.Response(body=answer.body, status=answer.status, content_type="application/json")
    async with session.post(url, data=orjson.dumps(payload), headers=JSON_HEADERS) as upstream:
        if not payload.get("stream"):
            body = await upstream.read()
            return web.Response(body=body, status=upstream.status, content_type="application/json")
        resp = web.StreamResponse(
            status=upstream.status,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
        await resp.prepare(request)
        # relay whatever has arrived, as soon as it arrives: no re-chunking, no buffering
        async for chunk in upstream.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def make_session(app: web.Application) -> None:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    app[SESSION] = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout())


async def close_session(app: web.Application) -> None:
    await app[SESSION].close()


async def serve(host: str, port: int, upstream: str, client: str) -> None:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    if client == "keepalive":
        from turnout.providers.keepalive import KeepAliveClient

        app[KEEPALIVE] = KeepAliveClient(JSON_HEADERS)
    app[UPSTREAM] = upstream.rstrip("/")
    app.on_startup.append(make_session)
    app.on_cleanup.append(close_session)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    await serve_until_signalled(app, host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:18801")
    parser.add_argument(
        "--client", choices=("aiohttp", "keepalive"), default="aiohttp", help="for whole answers"
    )
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.upstream, args.client))


if __name__ == "__main__":
    main()
