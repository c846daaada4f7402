"""A never-seen long prompt does not wait for its token count (issue 16, item 5).

When the bounds leave a target's window undecided, the first attempt starts while the count
runs (execute/speculate.py). Shown by ordering, never by timing: the gateway logs the moment a
long count ends (`prompt counted:`, at debug level), and the upstreams here note, as each
request arrives, whether that line was already written; the upstream of a target the count
rules out holds its answer until the gateway closes the connection.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.conftest import sdk_client
from tests.upstreams import serve_app
from turnout.model.tokens import PER_MESSAGE
from turnout.routing.prompt_size import count_text

COUNTED = "prompt counted:"
_HOLD = 60.0  # seconds an upstream waits for the gateway's next move, at the most
_POLL = 0.01


@dataclass
class Arrival:
    model: str
    max_tokens: int | None
    counted: bool  # the gateway had finished the count when the request arrived
    closed: bool = False  # the gateway closed the connection while the upstream held it
    # set once the upstream is done waiting (the test reads `closed` after it)
    waited: threading.Event = field(default_factory=threading.Event)

    def closed_by_gateway(self) -> bool:
        assert self.waited.wait(_HOLD)
        return self.closed


@dataclass
class Upstreams:
    """One app, a path per model: `answer` answers once the count has ended, `hold` waits
    for the gateway to close the connection (answers only if it never does), `refuse`
    answers a context-length 400 at once, `clamp` holds like `hold` until the count has
    ended, then answers."""

    log: list[Path] = field(default_factory=list)  # the gateway's log, once started
    arrivals: list[Arrival] = field(default_factory=list)

    def counted(self) -> bool:
        return bool(self.log) and COUNTED in self.log[0].read_text(errors="replace")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for model in ("answer", "hold", "refuse", "clamp", "big"):
            app.router.add_post(f"/{model}/v1/chat/completions", self._handler(model))
        return app

    def _handler(self, model: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            counted = self.counted()  # (before the body: the request has just arrived)
            body = await request.json()
            arrival = Arrival(model, body.get("max_tokens"), counted)
            self.arrivals.append(arrival)
            if model == "refuse":
                arrival.waited.set()
                error = {"message": "maximum context length exceeded", "type": "invalid"}
                error["code"] = "context_length_exceeded"
                return web.json_response({"error": error}, status=400)
            if model in ("answer", "hold", "clamp") and not counted:
                await _until(self.counted)
                if model != "answer":
                    arrival.closed = await _until(lambda: _closed(request))
            arrival.waited.set()
            return await _reply(request, body, f"from {model}")

        return handle


async def _until(condition: Any) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _HOLD
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(_POLL)
    return True


def _closed(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _reply(request: web.Request, body: dict, text: str) -> web.StreamResponse:
    if not body.get("stream"):
        message = {"role": "assistant", "content": text}
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            }
        )
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for delta, finish in (({"role": "assistant", "content": text}, None), ({}, "stop")):
        chunk = {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    return response


# ~1.9 MB of words (~476k tokens; ~15k words in its first 64k characters, the lower bound):
# its count takes far longer than the request's way to the upstream
_RNG = random.Random(5)
_WORDS = ["gateway", "routing", "window", "the", "quick", "fox", "1234", "def", "f(x):"]
LONG = " ".join(_RNG.choice(_WORDS) for _ in range(330_000))


@pytest.fixture(scope="module")
def exact() -> int:
    return count_text(LONG) + PER_MESSAGE


@pytest.fixture
def gateway(gateway_factory: Any) -> Any:
    """A gateway in front of `Upstreams`, with a factory for its routes; yields both."""
    upstreams = Upstreams()
    with serve_app(upstreams.app()) as port:

        def start(windows: dict[str, int], routes: dict[str, Any]) -> Any:
            base = f"http://127.0.0.1:{port}"
            models: dict[str, Any] = {}
            for model in ("answer", "hold", "refuse", "clamp", "big"):
                models[model] = {"provider": model}
                if model in windows:
                    models[model]["context_window"] = windows[model]
            providers = {m: {"kind": "openai", "base_url": f"{base}/{m}/v1"} for m in models}
            config = {
                "providers": providers,
                "models": models,
                "routes": routes,
                "log_level": "debug",
            }
            running = gateway_factory(config)
            upstreams.log.append(running.log_path)
            return running, upstreams

        yield start


def _messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": LONG}]


@pytest.mark.parametrize("stream", [False, True])
def test_a_new_long_prompt_goes_upstream_before_its_count_ends(gateway: Any, stream: bool) -> None:
    """(a) The target fits once counted (the bounds could not tell): the upstream has the
    request before the count ends, and its answer is the client's."""
    running, upstreams = gateway({"answer": 1_000_000}, {"chat": {"targets": ["answer"]}})
    client = sdk_client(running)
    if stream:
        chunks = client.chat.completions.create(
            model="chat", messages=_messages(), max_tokens=100, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        answer = client.chat.completions.create(model="chat", messages=_messages(), max_tokens=100)
        text = answer.choices[0].message.content or ""
    assert text == "from answer"
    assert [(a.model, a.counted) for a in upstreams.arrivals] == [("answer", False)]
    assert upstreams.counted()  # (and the count did end: it was still running at arrival)


@pytest.mark.parametrize("strict", [False, True])
def test_a_prompt_too_long_for_the_first_window_goes_to_the_next(
    gateway: Any, exact: int, strict: bool
) -> None:
    """(b) The count ends before the first upstream's first token and rules its window out:
    that attempt is cancelled (its connection closed) and listed as a skip, as the selector
    would have listed it; the next target answers; the first model's health is untouched.
    The same on a route strict about max_tokens."""
    route: dict[str, Any] = {"targets": ["hold", "big"]}
    if strict:
        route["max_tokens"] = "strict"
    # 200k: between the bounds (~15k words, ~1.9M bytes)
    running, upstreams = gateway({"hold": 200_000}, {"chat": route})
    raw = sdk_client(running).chat.completions.with_raw_response.create(
        model="chat", messages=_messages(), max_tokens=100
    )
    assert raw.parse().choices[0].message.content == "from big"
    assert raw.headers["x-turnout-fallback"] == f"hold=context_length({exact}+100>200000)"
    first, second = upstreams.arrivals
    assert (first.model, first.counted, first.closed_by_gateway()) == ("hold", False, True)
    assert (second.model, second.counted) == ("big", True)
    health = running.get("/health/providers").json()
    hold = next(t for t in health["routes"]["chat"]["targets"] if t["model"] == "hold")
    assert (hold["requests"], hold["failures"], hold["error_rate"]) == (0, 0, 0)


def test_an_upstream_context_length_error_waits_for_the_count(gateway: Any, exact: int) -> None:
    """(b') The upstream refuses the prompt before the count ends: the count decides, and the
    target is listed as the count-first path would have listed it."""
    running, upstreams = gateway({"refuse": 200_000}, {"chat": {"targets": ["refuse", "big"]}})
    raw = sdk_client(running).chat.completions.with_raw_response.create(
        model="chat", messages=_messages(), max_tokens=100
    )
    assert raw.parse().choices[0].message.content == "from big"
    assert raw.headers["x-turnout-fallback"] == f"refuse=context_length({exact}+100>200000)"
    assert [a.model for a in upstreams.arrivals] == ["refuse", "big"]


def test_a_prompt_too_long_for_every_window_is_the_clients_400(gateway: Any, exact: int) -> None:
    running, upstreams = gateway({"hold": 200_000}, {"chat": {"targets": ["hold"]}})
    with pytest.raises(openai.BadRequestError) as refused:
        sdk_client(running).chat.completions.create(
            model="chat", messages=_messages(), max_tokens=100
        )
    assert refused.value.code == "context_length_exceeded"
    assert f"context_length({exact}+100>200000)" in refused.value.message
    assert [(a.model, a.closed_by_gateway()) for a in upstreams.arrivals] == [("hold", True)]


def test_a_prompt_that_leaves_too_little_room_is_asked_again_clamped(
    gateway: Any, exact: int
) -> None:
    """(c) It fits, but not with the max_tokens asked: the first attempt is cancelled before
    its first token and the target asked again for what the window leaves."""
    window = exact + 500
    running, upstreams = gateway({"clamp": window}, {"chat": {"targets": ["clamp"]}})
    raw = sdk_client(running).chat.completions.with_raw_response.create(
        model="chat", messages=_messages(), max_tokens=1_000
    )
    assert raw.parse().choices[0].message.content == "from clamp"
    assert raw.headers["x-turnout-max-tokens"] == "500 (asked 1000)"
    first, second = upstreams.arrivals
    assert (first.max_tokens, first.counted, first.closed_by_gateway()) == (1_000, False, True)
    assert (second.max_tokens, second.counted) == (500, True)


def test_a_hedged_route_counts_first(gateway: Any) -> None:
    """The documented exception: a hedge could go to a target the count has not vetted, so
    the upstream has the request only once the count has ended."""
    hedged = {"targets": ["answer", "big"], "hedge": {"after": "30s", "max_extra": 0.5}}
    running, upstreams = gateway({"answer": 1_000_000}, {"chat": hedged})
    answer = sdk_client(running).chat.completions.create(
        model="chat", messages=_messages(), max_tokens=100
    )
    assert answer.choices[0].message.content == "from answer"
    assert [(a.model, a.counted) for a in upstreams.arrivals] == [("answer", True)]
