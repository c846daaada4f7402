"""The aiohttp application: routes, error shapes for anything unexpected, lifecycle."""

from __future__ import annotations

import gc
import logging

from aiohttp import web

from turnout.dialects.anthropic.ingress import INGRESS as ANTHROPIC
from turnout.dialects.openai.ingress import INGRESS as OPENAI
from turnout.gateway import Gateway
from turnout.server.admin import AdminEndpoints
from turnout.server.chat import ChatHandler

log = logging.getLogger("turnout.server")

GATEWAY = web.AppKey("gateway", Gateway)
MAX_BODY = 32 * 1024 * 1024  # chat requests with images or long documents are large


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    """Every error the client sees is in its API's shape; the process keeps serving."""
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
        return _error(exc.status, message, path=request.path)
    except ConnectionResetError:
        raise  # the client went away: nobody to answer
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error(500, "internal gateway error", error_type="api_error", path=request.path)


def _error(
    status: int, message: str, error_type: str | None = None, path: str = ""
) -> web.Response:
    dialect = ANTHROPIC if path.startswith("/v1/messages") else OPENAI
    body = dialect.encode_error(status, message, error_type=error_type)
    return web.Response(status=status, body=body, content_type="application/json")


def make_app(gateway: Gateway) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY)
    app[GATEWAY] = gateway
    app.router.add_post("/v1/chat/completions", ChatHandler(gateway, OPENAI))
    app.router.add_post("/v1/messages", ChatHandler(gateway, ANTHROPIC))
    AdminEndpoints(gateway).add_routes(app)

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
