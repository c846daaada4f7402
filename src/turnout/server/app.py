"""The aiohttp application: routes, error shapes for anything unexpected, lifecycle."""

from __future__ import annotations

import logging
import os

import orjson
from aiohttp import web

from turnout.dialects.openai.ingress import INGRESS as OPENAI
from turnout.dialects.openai.ingress import encode_error
from turnout.gateway import Gateway
from turnout.server.chat import ChatHandler

log = logging.getLogger("turnout.server")

GATEWAY = web.AppKey("gateway", Gateway)
MAX_BODY = 32 * 1024 * 1024  # chat requests with images or long documents are large


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    """Every error the client sees is in OpenAI's shape; the process keeps serving."""
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
        return _error(exc.status, message)
    except ConnectionResetError:
        raise  # the client went away: nobody to answer
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error(500, "internal gateway error", error_type="api_error")


def _error(status: int, message: str, error_type: str | None = None) -> web.Response:
    body = encode_error(status, message, error_type=error_type)
    return web.Response(status=status, body=body, content_type="application/json")


def _models(gateway: Gateway) -> bytes:
    data = [
        {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": "turnout",
            "turnout": {"kind": "route", "targets": route.targets},
        }
        for name, route in gateway.config.routes.items()
    ] + [
        {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": model.provider,
            "turnout": {"kind": "model", "upstream": model.model or name},
        }
        for name, model in gateway.config.models.items()
    ]
    return orjson.dumps({"object": "list", "data": data})


def make_app(gateway: Gateway) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY)
    app[GATEWAY] = gateway
    models_body = _models(gateway)

    async def models(_: web.Request) -> web.Response:
        return web.Response(body=models_body, content_type="application/json")

    worker = {"status": "ok", "pid": os.getpid()}  # which worker answered, with --workers

    async def health(_: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(worker), content_type="application/json")

    async def health_providers(_: web.Request) -> web.Response:
        body = orjson.dumps(gateway.route_health())
        return web.Response(body=body, content_type="application/json")

    app.router.add_post("/v1/chat/completions", ChatHandler(gateway, OPENAI))
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/health/providers", health_providers)

    async def on_startup(_: web.Application) -> None:
        await gateway.start()

    async def on_cleanup(_: web.Application) -> None:
        await gateway.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
