"""The simulator's HTTP app: OpenAI's `POST /v1/chat/completions`, `POST /v1/embeddings`
(embeddings.py) and `GET /v1/models`, and Anthropic's `POST /v1/messages` (anthropic.py),
answering per model as its SimBehaviour says, plus the /sim admin routes."""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from turnout import clock
from turnout.sim import admin, anthropic, embeddings, wire
from turnout.sim.answer import Answer, plan_answer, wants_json
from turnout.sim.behaviour import Fault
from turnout.sim.pacing import (
    hold_until_gone,
    send_stream,
    tracked,
    whole_answer_arrives,
    with_stream_error,
)
from turnout.sim.schema import SimBehaviour
from turnout.sim.state import STATE, Draw, ModelState, SimState


def error_response(
    status: int,
    message: str | None = None,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=wire.error_body(status, message, code=code, param=param),
        headers={**wire.JSON_HEADERS, **(headers or {})},
    )


def _fail(model: ModelState, status: int, message: str | None = None) -> web.Response:
    model.statuses[str(status)] += 1
    if status == 429:
        return error_response(429, message, headers=model.rate_limit_headers())
    return error_response(status, message, headers=model.headers)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await tracked(request, _chat_completions)


async def _chat_completions(request: web.Request, state: SimState) -> web.StreamResponse:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error_response(400, "We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return error_response(400, "The request body must be a JSON object.")
    name = body.get("model")
    if not isinstance(name, str) or not name:
        return error_response(400, "You must provide a model parameter.", param="model")
    model = state.models.get(name)
    if model is None:
        state.unknown[name] += 1
        return error_response(
            404,
            f"The model `{name}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    model.requests += 1
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        model.statuses["400"] += 1
        return error_response(
            400,
            "Missing required parameter: 'messages'.",
            code="missing_required_parameter",
            param="messages",
            headers=model.headers,
        )
    outage = state.outage(model)
    if outage is not None:
        model.faults["outage"] += 1
        return _fail(model, outage.status, outage.message)
    if not model.take_window(clock.now()):
        model.faults["rate_limit_window"] += 1
        return _fail(model, 429, "Rate limit reached for requests.")
    draw = model.draw(wants_json(body))
    if draw.fault is Fault.RATE_LIMIT or draw.fault is Fault.ERROR:
        model.faults[draw.fault.value] += 1
        return _fail(model, draw.status)
    if draw.fault is Fault.HANG:
        model.faults["hang"] += 1
        await hold_until_gone(request)
        return web.Response()  # nobody is listening; aiohttp drops it
    if draw.fault is not Fault.NONE:
        model.faults[draw.fault.value] += 1
    serial = state.next_serial()
    behaviour = model.behaviour
    broken = draw.fault is Fault.MALFORMED
    answer = plan_answer(
        body, model.tokens, behaviour.reply, broken, serial, behaviour.json_fields_limit
    )
    if body.get("stream") is True:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return await _stream(request, model, answer, draw, serial, include_usage)
    return await _complete(request, model, answer, draw, serial)


async def _complete(
    request: web.Request, model: ModelState, answer: Answer, draw: Draw, serial: int
) -> web.StreamResponse:
    if not await whole_answer_arrives(request, model, answer, draw):
        return web.Response()
    body = wire.completion(
        f"chatcmpl-sim{serial:08d}",
        int(time.time()),
        model.name,
        answer.message(),
        answer.finish_reason,
        answer.usage(),
    )
    model.statuses["200"] += 1
    return web.Response(body=body, headers={**wire.JSON_HEADERS, **model.headers})


async def _stream(
    request: web.Request,
    model: ModelState,
    answer: Answer,
    draw: Draw,
    serial: int,
    include_usage: bool,
) -> web.StreamResponse:
    encoder = wire.ChunkEncoder(
        f"chatcmpl-sim{serial:08d}", int(time.time()), model.name, include_usage
    )
    # the role chunk first, then one chunk per piece: the layout with_stream_error expects
    chunks = answer.chunks(encoder, include_usage)
    if model.behaviour.stream_error_after is not None:
        model.faults["stream_error"] += 1
        chunks = with_stream_error(
            chunks, model.behaviour.stream_error_after, answer, wire.STREAM_ERROR
        )
    cut = -1
    if draw.fault is Fault.DISCONNECT:
        # never past the finish chunk, so the client always sees an unfinished answer
        finish_index = len(answer.pieces) + 1
        cut = min(model.behaviour.disconnect_after, finish_index)
    headers = {**wire.SSE_HEADERS, **model.headers}
    return await send_stream(request, model, chunks, draw.ttft, cut, headers)


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    created = int(time.time() - state.elapsed())
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "turnout-sim"}
        for name in state.models
    ]
    return web.Response(
        body=orjson.dumps({"object": "list", "data": data}), headers=wire.JSON_HEADERS
    )


async def _on_startup(app: web.Application) -> None:
    app[STATE].started = clock.monotonic()  # outage windows count from serving, not building


async def _on_shutdown(app: web.Application) -> None:
    # hung and slow handlers would otherwise hold shutdown for its whole timeout
    for task in list(app[STATE].tasks):
        task.cancel()


def make_sim_app(behaviours: dict[str, SimBehaviour], seed: int = 0) -> web.Application:
    """An aiohttp app serving the OpenAI Chat Completions and Anthropic Messages APIs for the
    given models."""
    app = web.Application(client_max_size=64 * 1024 * 1024)  # long prompts in benchmarks
    app[STATE] = SimState(behaviours, seed)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/messages", anthropic.messages)
    app.router.add_post("/v1/embeddings", embeddings.embeddings)
    app.router.add_get("/v1/models", list_models)
    admin.add_routes(app)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    return app
