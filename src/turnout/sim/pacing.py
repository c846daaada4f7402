"""Pacing and faults shared by the simulator's endpoints (OpenAI's in app.py, Anthropic's in
anthropic.py): answers as cancellable tasks, hangs, dropped connections, and event streams
sent at the model's token rate."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from turnout.sim.answer import Answer
from turnout.sim.behaviour import Fault
from turnout.sim.state import STATE, Draw, ModelState, SimState

_HANG_POLL = 0.05  # seconds between checks that a hung request's client is still there
# chunks due within this many seconds go out in one write: a fast model (benchmarks) then
# costs one syscall per burst, not one per token
_COALESCE = 0.001


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
    tokens per second); with `cut` >= 0 the connection drops before that chunk. A model with
    `stall_after` pauses `stall_for` seconds after that many content chunks."""
    response = web.StreamResponse(status=200, headers=headers)
    model.statuses["200"] += 1
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    start = loop.time() + ttft
    interval = 1.0 / model.behaviour.tokens_per_second
    stall_after = model.behaviour.stall_after
    stall_at = -1 if stall_after is None else 1 + stall_after  # (chunk 0 opens the stream)
    pending: list[bytes] = []
    for index, (slot, chunk) in enumerate(chunks):
        if index == cut:
            break
        if index == stall_at:
            model.faults["stall"] += 1
            start += model.behaviour.stall_for  # every later chunk is that much later
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
