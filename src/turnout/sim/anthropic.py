"""Anthropic's `POST /v1/messages` on the simulator, with the same per-model behaviours as the
OpenAI endpoint: latency and pacing, error rates (Anthropic error bodies), 429s with
retry-after and anthropic-ratelimit-* headers, hangs, disconnects, malformed JSON, outages,
tool calls and in-band stream errors.

Requests are read, and answers written, by the gateway's own Anthropic ingress dialect: what
turnout sends its Anthropic clients is Anthropic's wire format, so the sim exercises it too.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import orjson
from aiohttp import web

from turnout import clock
from turnout.dialects.anthropic.ingress import INGRESS, AnthropicStreamEncoder
from turnout.dialects.errors import InvalidRequest
from turnout.model import Delta, Response, ToolCall, ToolCallDelta, Usage
from turnout.sim import wire
from turnout.sim.answer import Answer, plan_answer, wants_json
from turnout.sim.behaviour import Fault
from turnout.sim.content import system_asks_for_json
from turnout.sim.pacing import (
    hold_until_gone,
    send_stream,
    tracked,
    whole_answer_arrives,
    with_stream_error,
)
from turnout.sim.schema import SimBehaviour
from turnout.sim.state import Draw, ModelState, SimState

# Anthropic's words for each status (https://docs.claude.com/en/api/errors)
_MESSAGES = {
    400: "Invalid request.",
    401: "invalid x-api-key",
    402: "Your credit balance is too low to access the Anthropic API.",
    403: "Your API key does not have permission to use the specified resource.",
    404: "The requested resource was not found.",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "This request would exceed the rate limit for your organization.",
    500: "Internal server error",
    529: "Overloaded",
}
STREAM_ERROR = AnthropicStreamEncoder("", "").error(529, "Overloaded (simulated)", "overloaded")


def _error(
    status: int, message: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    default = _MESSAGES.get(status, f"Simulated error {status}.")
    body = INGRESS.encode_error(status, message or f"{default} (simulated)")
    return web.Response(status=status, body=body, headers={**wire.JSON_HEADERS, **(headers or {})})


def _reset_time(seconds: float) -> str:
    """Anthropic's resets are RFC 3339 times, not durations (on turnout.clock: a scenario's
    gateway reads them on its simulated clock)."""
    when = datetime.fromtimestamp(clock.now() + seconds, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _window(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {
        "anthropic-ratelimit-requests-limit": str(limit),
        "anthropic-ratelimit-requests-remaining": str(remaining),
        "anthropic-ratelimit-requests-reset": _reset_time(reset),
    }


def answer_headers(behaviour: SimBehaviour) -> dict[str, str]:
    remaining = behaviour.ratelimit_remaining
    if remaining is None:
        return {}
    return _window(max(remaining, 1), remaining, behaviour.ratelimit_reset)


def rate_limit_headers(behaviour: SimBehaviour) -> dict[str, str]:
    limit = max(behaviour.ratelimit_remaining or 1, 1)
    headers = _window(limit, 0, behaviour.retry_after or 1.0)
    if behaviour.retry_after is not None:
        headers["retry-after"] = wire.seconds_text(behaviour.retry_after)
    return headers


def _fail(model: ModelState, status: int) -> web.Response:
    model.statuses[str(status)] += 1
    if status == 429:
        return _error(429, headers=rate_limit_headers(model.behaviour))
    return _error(status, headers=answer_headers(model.behaviour))


async def messages(request: web.Request) -> web.StreamResponse:
    return await tracked(request, _messages)


async def _messages(request: web.Request, state: SimState) -> web.StreamResponse:
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _error(400, "The request body is not valid JSON.")
    name = data.get("model") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        return _error(400, "model: Field required")
    model = state.models.get(name)
    if model is None:
        state.unknown[name] += 1
        return _error(404, f"model: {name}")
    model.requests += 1
    try:
        decoded = INGRESS.decode_request(raw)
    except InvalidRequest as exc:
        model.statuses["400"] += 1
        return _error(400, exc.message, answer_headers(model.behaviour))
    outage = state.outage_status(model)
    if outage is not None:
        model.faults["outage"] += 1
        return _fail(model, outage)
    headers = answer_headers(model.behaviour)
    if model.behaviour.ratelimit_limit is not None:
        # an enforced limit: what is left of this request's window, in Anthropic's headers,
        # taken now (a later request's answer must not tell this one's window)
        now = clock.now()
        fits = model.take_window(now)
        limit, left, reset = model.window_left(now)
        headers = _window(limit, left, reset)
        if not fits:
            model.faults["rate_limit_window"] += 1
            model.statuses["429"] += 1
            retry = {"retry-after": str(max(1, math.ceil(reset)))}
            return _error(429, headers={**headers, **retry})
    response_format = decoded.response_format
    if response_format is None and system_asks_for_json(decoded.messages):
        response_format = {"type": "json_object"}  # a model that does what its system says
    # what plan_answer reads, in the internal (OpenAI) shape the ingress decoded into
    body = {
        "messages": decoded.messages,
        "tools": decoded.tools,
        "tool_choice": decoded.tool_choice,
        "response_format": response_format,
        "max_tokens": decoded.max_tokens,
    }
    draw = model.draw(wants_json(body))
    if draw.fault is Fault.RATE_LIMIT or draw.fault is Fault.ERROR:
        model.faults[draw.fault.value] += 1
        return _fail(model, draw.status)
    if draw.fault is Fault.HANG:
        model.faults["hang"] += 1
        await hold_until_gone(request)
        return web.Response()
    if draw.fault is not Fault.NONE:
        model.faults[draw.fault.value] += 1
    serial = state.next_serial()
    behaviour = model.behaviour
    broken = draw.fault is Fault.MALFORMED
    answer = plan_answer(
        body, model.tokens, behaviour.reply, broken, serial, behaviour.json_fields_limit
    )
    if answer.tool_name is not None:
        answer.tool_call_id = f"toolu_sim{serial:08d}"
    if decoded.stream:
        return await _stream(request, model, answer, draw, serial, headers)
    return await _complete(request, model, answer, draw, serial, headers)


def _response(answer: Answer, model: str, serial: int) -> Response:
    text = "".join(answer.pieces)
    calls = []
    if answer.tool_name is not None:
        calls = [ToolCall(answer.tool_call_id or "toolu_sim", answer.tool_name, text)]
    return Response(
        id=f"msg_sim{serial:08d}",
        model=model,
        content=None if calls else text,
        tool_calls=calls,
        finish_reason=answer.finish_reason,
        usage=Usage(answer.prompt_tokens, len(answer.pieces)),
    )


async def _complete(
    request: web.Request,
    model: ModelState,
    answer: Answer,
    draw: Draw,
    serial: int,
    headers: dict[str, str],
) -> web.StreamResponse:
    if not await whole_answer_arrives(request, model, answer, draw):
        return web.Response()
    body = INGRESS.encode_response(_response(answer, model.name, serial), model.name)
    model.statuses["200"] += 1
    return web.Response(body=body, headers={**wire.JSON_HEADERS, **headers})


def stream_chunks(answer: Answer, model: str, serial: int) -> list[tuple[int, bytes]]:
    """(token slot, SSE bytes): message_start, one chunk per piece, then the closing events."""
    encoder = AnthropicStreamEncoder(model, f"msg_sim{serial:08d}")
    chunks = [(0, encoder.start())]
    for slot, piece in enumerate(answer.pieces):
        if answer.tool_name is None:
            delta = Delta(content=piece)
        elif slot == 0:
            call = ToolCallDelta(0, answer.tool_call_id, answer.tool_name, piece)
            delta = Delta(tool_calls=[call])
        else:
            delta = Delta(tool_calls=[ToolCallDelta(0, arguments=piece)])
        chunks.append((slot, encoder.delta(delta)))
    encoder.delta(Delta(finish_reason=answer.finish_reason))
    usage = Usage(answer.prompt_tokens, len(answer.pieces))
    chunks.append((max(len(answer.pieces) - 1, 0), encoder.finish(usage)))
    return chunks


async def _stream(
    request: web.Request,
    model: ModelState,
    answer: Answer,
    draw: Draw,
    serial: int,
    headers: dict[str, str],
) -> web.StreamResponse:
    chunks = stream_chunks(answer, model.name, serial)
    if model.behaviour.stream_error_after is not None:
        model.faults["stream_error"] += 1
        chunks = with_stream_error(chunks, model.behaviour.stream_error_after, answer, STREAM_ERROR)
    cut = -1
    if draw.fault is Fault.DISCONNECT:
        # never past the last piece, so the client always sees an unfinished answer
        cut = min(model.behaviour.disconnect_after, len(answer.pieces) + 1)
    return await send_stream(
        request, model, chunks, draw.ttft, cut, {**wire.SSE_HEADERS, **headers}
    )
