"""Upstreams for continuing a broken stream (tests/test_continuation.py, test_stalls.py).

The simulator answers its fixed reply whatever the conversation; a continuing model must
instead carry on from a partial answer. `continuing_upstream` is such a model, in both wire
formats, with one intended answer (INTENDED): given a prefill (Anthropic's last assistant
turn, or vLLM's `continue_final_message`) or an instruction to continue, it writes the rest
of INTENDED, repeating the last words it was given as real models often do, so that the
gateway has an overlap to trim. `stalling_upstream` sends part of INTENDED, then goes quiet
and notes when its client hangs up."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from typing import Any

from aiohttp import web

from turnout.dialects.anthropic.ingress import AnthropicStreamEncoder
from turnout.model import Delta, Usage

INTENDED = (
    "The lighthouse keeper climbed the spiral stairs at dusk, counting each worn step as "
    "his father had taught him. At the top he trimmed the wick, polished the great lens, "
    "and watched the beam sweep across the restless water. Far out, a fishing boat turned "
    "toward the harbour, its crew trusting the light as sailors had for a hundred years. "
    "When the storm finally broke, the keeper wrote one line in the log: all ships home."
)
_WORDISH = re.compile(r"\s*\S+")


def pieces(text: str) -> list[str]:
    """Word-ish pieces, as the simulator splits its reply (leading space kept)."""
    return _WORDISH.findall(text)


def _rest(prefill: str, repeat: int) -> str:
    """What a continuing model writes after `prefill`: the rest of INTENDED, beginning with
    the last `repeat` words of the prefill again. A prefill that is not the start of
    INTENDED gets INTENDED whole."""
    if not prefill or not INTENDED.startswith(prefill):
        return INTENDED
    given = pieces(prefill)
    again = "".join(given[-repeat:]) if repeat else ""
    return again + INTENDED[len(prefill) :]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


class Continuing:
    """The continuing model's app, and the request bodies it received (for assertions)."""

    def __init__(self, repeat: int = 1) -> None:
        self.repeat = repeat  # words of the prefill it writes again
        self.bodies: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._openai)
        self.app.router.add_post("/v1/messages", self._anthropic)

    def _reply(self, messages: list[dict[str, Any]], prefilled: bool) -> str:
        last = messages[-1] if messages else {}
        if prefilled and last.get("role") == "assistant":
            return _rest(_text_of(last.get("content")), self.repeat)
        if len(messages) >= 2 and messages[-2].get("role") == "assistant":
            # told to continue: models asked so tend to start a few words back
            return _rest(_text_of(messages[-2].get("content")), self.repeat + 2)
        return INTENDED

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        prefilled = body.get("continue_final_message") is True
        text = self._reply(body["messages"], prefilled)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            event = {
                "id": "chatcmpl-continuing",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body["model"],
                "choices": [choice],
            }
            return f"data: {json.dumps(event)}\n\n".encode()

        await response.write(chunk({"role": "assistant", "content": ""}))
        for piece in pieces(text):
            await response.write(chunk({"content": piece}))
        await response.write(chunk({}, "stop"))
        usage = {"prompt_tokens": 50, "completion_tokens": len(pieces(text)), "total_tokens": 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        last = {"id": "chatcmpl-continuing", "object": "chat.completion.chunk", "created": 0}
        last |= {"model": body["model"], "choices": [], "usage": usage}
        await response.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        return response

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        text = self._reply(body["messages"], prefilled=True)  # Anthropic continues natively
        encoder = AnthropicStreamEncoder(body["model"], "msg_continuing")
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(encoder.start())
        for piece in pieces(text):
            await response.write(encoder.delta(Delta(content=piece)))
        encoder.delta(Delta(finish_reason="stop"))
        await response.write(encoder.finish(Usage(50, len(pieces(text)))))
        return response


class Stalling:
    """Sends the first `after` pieces of INTENDED, then nothing; `gone` is set once its
    client has closed the connection."""

    def __init__(self, after: int = 20) -> None:
        self.after = after
        self.gone = threading.Event()
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._openai)

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for piece in [""] + pieces(INTENDED)[: self.after]:
            choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
            event = {"id": "c", "object": "chat.completion.chunk", "created": 0}
            event |= {"model": body["model"], "choices": [choice]}
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
        try:
            while True:  # quiet, until the client hangs up
                transport = request.transport
                if transport is None or transport.is_closing():
                    return response
                await asyncio.sleep(0.05)
        finally:
            self.gone.set()
