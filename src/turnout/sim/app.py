"""The simulator's HTTP app: OpenAI's `POST /v1/chat/completions` and `GET /v1/models`, and
Anthropic's `POST /v1/messages` (anthropic.py), answering per model as its SimBehaviour
says, plus the /sim admin routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from turnout.config.schema import SimBehaviour
from turnout.sim import admin, wire
from turnout.sim.answer import Answer, plan_answer, wants_json
from turnout.sim.behaviour import Fault
from turnout.sim.state import STATE, Draw, ModelState, SimState

_HANG_POLL = 0.05  # seconds between checks that a hung request's client is still there
# chunks due within this many seconds go out in one write: a fast model (benchmarks) then
# costs one syscall per burst, not one per token
_COALESCE = 0.001


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


def abort_connection(request: web.BaseRequest) -> None:
    # abort, not close: the client must see a broken connection, not a clean end
    transport = request.transport
    if transport is not None:
        transport.abort()


async def hold_until_gone(request: web.BaseRequest) -> None:
    """Never answer; return once the client has gone (aiohttp does not cancel us by default)."""
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(_HANG_POLL)


async def tracked(
    request: web.Request,
    answer: Callable[[web.Request, SimState], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Run one answer as a task the sim can cancel on shutdown (hung requests included)."""
    state = request.app[STATE]
    task = asyncio.current_task()
    if task is not None:
        state.tasks.add(task)
    try:
        return await answer(request, state)
    except ConnectionError:
        # the client went away mid-answer: nothing left to send it
        return web.Response()
    finally:
        if task is not None:
            state.tasks.discard(task)


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
    outage = state.outage_status(model)
    if outage is not None:
        model.faults["outage"] += 1
        return _fail(model, outage)
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


async def whole_answer_arrives(
    request: web.Request, model: ModelState, answer: Answer, draw: Draw
) -> bool:
    """Wait as long as the whole answer takes; False when the fault is to hang up instead."""
    # a non-streaming answer arrives when the last token would have
    delay = draw.ttft + max(len(answer.pieces) - 1, 0) / model.behaviour.tokens_per_second
    if delay > 0:
        await asyncio.sleep(delay)
    if draw.fault is Fault.DISCONNECT:
        abort_connection(request)
        return False
    return True


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


def with_stream_error(
    chunks: list[tuple[int, bytes]], after: int, answer: Answer, error: bytes
) -> list[tuple[int, bytes]]:
    """The stream cut after `after` content pieces, ending in an in-band error event instead.
    `chunks` holds an opening chunk, then one chunk per piece of the answer."""
    kept = 1 + min(after, len(answer.pieces))
    slot = chunks[kept][0] if kept < len(chunks) else chunks[-1][0]
    return [*chunks[:kept], (slot, error)]


async def send_stream(
    request: web.Request,
    model: ModelState,
    chunks: list[tuple[int, bytes]],
    ttft: float,
    cut: int,
    headers: dict[str, str],
) -> web.StreamResponse:
    """A 200 event stream: each chunk when its token slot is due (`ttft`, then the model's
    tokens per second); with `cut` >= 0 the connection drops before that chunk."""
    response = web.StreamResponse(status=200, headers=headers)
    model.statuses["200"] += 1
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    start = loop.time() + ttft
    interval = 1.0 / model.behaviour.tokens_per_second
    pending: list[bytes] = []
    for index, (slot, chunk) in enumerate(chunks):
        if index == cut:
            break
        delay = start + slot * interval - loop.time()
        if delay > _COALESCE:
            if pending:
                await response.write(b"".join(pending))
                pending.clear()
            await asyncio.sleep(delay)
        pending.append(chunk)
    if pending:
        await response.write(b"".join(pending))
    if cut >= 0:
        abort_connection(request)
    return response


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
    app[STATE].started = time.monotonic()  # outage windows count from serving, not building


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
    # imported here: the Anthropic endpoint builds on this module's fault and pacing helpers
    from turnout.sim import anthropic

    app.router.add_post("/v1/messages", anthropic.messages)
    app.router.add_get("/v1/models", list_models)
    admin.add_routes(app)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    return app
