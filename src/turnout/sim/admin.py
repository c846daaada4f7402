"""Runtime control for tests and demos: `/sim/models`, `/sim/reset`, `/sim/stats`."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from turnout.sim import wire
from turnout.sim.behaviour import describe_errors
from turnout.sim.schema import SimBehaviour
from turnout.sim.state import STATE


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), headers=wire.JSON_HEADERS)


def _bad_request(message: str) -> web.Response:
    return web.Response(status=400, body=wire.error_body(400, message), headers=wire.JSON_HEADERS)


async def _read_object(request: web.Request) -> dict[str, Any] | web.Response:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _bad_request("the body is not valid JSON")
    if not isinstance(data, dict):
        return _bad_request("the body must be a JSON object")
    return data


async def list_behaviours(request: web.Request) -> web.Response:
    state = request.app[STATE]
    models = {name: m.behaviour.model_dump(mode="json") for name, m in state.models.items()}
    return _json({"seed": state.seed, "models": models})


async def put_behaviour(request: web.Request) -> web.Response:
    """Replace (or create) one model's behaviour; its generator and counters carry on."""
    name = request.match_info["name"]
    data = await _read_object(request)
    if isinstance(data, web.Response):
        return data
    try:
        behaviour = SimBehaviour.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(describe_errors(exc))
        return _bad_request(f"invalid behaviour for {name!r}: {problems}")
    request.app[STATE].set_behaviour(name, behaviour)
    return _json({"model": name, "behaviour": behaviour.model_dump(mode="json")})


async def delete_behaviour(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if request.app[STATE].models.pop(name, None) is None:
        return web.Response(
            status=404,
            body=wire.error_body(404, f"no simulated model {name!r}", code="model_not_found"),
            headers=wire.JSON_HEADERS,
        )
    return _json({"deleted": name})


async def reset(request: web.Request) -> web.Response:
    """Fresh generators, zeroed counters, outage clock from now. Body `{"seed": n}` optional."""
    data = await _read_object(request)
    if isinstance(data, web.Response):
        return data
    seed = data.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        return _bad_request("seed must be an integer")
    state = request.app[STATE]
    state.reset(seed)
    return _json({"seed": state.seed})


async def stats(request: web.Request) -> web.Response:
    return _json(request.app[STATE].stats())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/sim/models", list_behaviours)
    app.router.add_post("/sim/models/{name:.+}", put_behaviour)
    app.router.add_delete("/sim/models/{name:.+}", delete_behaviour)
    app.router.add_post("/sim/reset", reset)
    app.router.add_get("/sim/stats", stats)
