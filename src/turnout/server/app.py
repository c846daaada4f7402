"""The aiohttp application: routes, error shapes for anything unexpected, lifecycle."""

from __future__ import annotations

import gc
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from turnout.dialects.anthropic.ingress import INGRESS as ANTHROPIC
from turnout.dialects.openai.ingress import INGRESS as OPENAI
from turnout.gateway import Gateway
from turnout.server.admin import AdminEndpoints
from turnout.server.chat import ChatHandler

log = logging.getLogger("turnout.server")

GATEWAY = web.AppKey("gateway", Gateway)
MAX_BODY = 32 * 1024 * 1024  # chat requests with images or long documents are large


def _shaped(handler: Handler) -> Handler:
    """Every error the client sees is in its API's shape; the process keeps serving.
    (A wrapper per route, not a middleware: aiohttp's middleware chain costs about 2% of a
    proxied request.)"""

    async def shaped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = {
                404: f"no such endpoint: {request.method} {request.path}",
                405: f"method {request.method} is not allowed on {request.path}",
                413: f"request body larger than {MAX_BODY} bytes",
            }.get(exc.status, exc.reason)
            response = _error(exc.status, message, path=request.path)
            if allow := exc.headers.get("Allow"):
                response.headers["Allow"] = allow
            return response
        except ConnectionResetError:
            raise  # the client went away: nobody to answer
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return _error(500, "internal gateway error", error_type="api_error", path=request.path)

    return shaped


def _error(
    status: int, message: str, error_type: str | None = None, path: str = ""
) -> web.Response:
    dialect = ANTHROPIC if path.startswith("/v1/messages") else OPENAI
    body = dialect.encode_error(status, message, error_type=error_type)
    return web.Response(status=status, body=body, content_type="application/json")


async def _no_route(request: web.Request) -> web.StreamResponse:
    """The catch-all route: 405 when another route has this path, else 404."""
    itself = request.match_info.route.resource
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not itself:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def make_app(gateway: Gateway) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[GATEWAY] = gateway
    router = app.router
    router.add_post("/v1/chat/completions", _shaped(ChatHandler(gateway, OPENAI)))
    router.add_post("/v1/messages", _shaped(ChatHandler(gateway, ANTHROPIC)))
    for path, handler in AdminEndpoints(gateway).routes():
        router.add_get(path, _shaped(handler))
    # last: any other path or method, answered 404 or 405 in the client's shape
    router.add_route("*", "/{path:.*}", _shaped(_no_route))

    async def on_startup(_: web.Application) -> None:
        await gateway.start()
        # everything loaded so far lives as long as the process: keep the garbage collector
        # from scanning it again on every full collection
        gc.collect()
        gc.freeze()

    async def on_cleanup(_: web.Application) -> None:
        await gateway.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
