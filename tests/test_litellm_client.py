"""litellm as a client of turnout (issue 13, item 4): litellm sends `max_tokens=128000` to an
Anthropic endpoint when the caller names none and litellm does not know the model (a route
name such as `claude`; litellm's AnthropicConfig.get_max_tokens_for_model falls back to
DEFAULT_ANTHROPIC_CHAT_MAX_TOKENS). Its answer must still come: turnout asks each target for
what it can give. A real gateway process, litellm's own `acompletion` as the client, and an
upstream that, like Anthropic and OpenAI, refuses a max_tokens over the model's limit."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tests.upstreams import SIM_ANTHROPIC_ENV, serve_app

# litellm fetches its model price map from the network at import unless told not to
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# litellm's own TypedDicts warn about pydantic's ReadOnly as its modules load: not ours
READONLY_NOISE = r"Items? .* `ReadOnly` qualifier"
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", READONLY_NOISE, UserWarning)
    litellm = pytest.importorskip("litellm", reason="litellm is not installed: pip install litellm")
litellm.suppress_debug_info = True  # (else it prints a provider-list banner on every error)
pytestmark = pytest.mark.filterwarnings(f"ignore:{READONLY_NOISE}:UserWarning")

LIMIT = 8192  # the upstream model's own output limit
ANSWER = "fits"
QUESTION = [{"role": "user", "content": "hi"}]


def _too_many(asked: Any) -> bool:
    return isinstance(asked, int) and asked > LIMIT


async def _sse(request: web.Request, events: list[tuple[str | None, Any]]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        payload = data if isinstance(data, str) else json.dumps(data)
        await response.write(f"{head}data: {payload}\n\n".encode())
    await response.write_eof()
    return response


def limited_provider(seen: list[tuple[str, Any]]) -> web.Application:
    """Anthropic's /v1/messages and OpenAI's /v1/chat/completions, streamed or not, each
    refusing a max_tokens above LIMIT with its API's 400, as the real ones do."""

    async def messages(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append(("anthropic", body.get("max_tokens")))
        if _too_many(body.get("max_tokens")):
            message = f"max_tokens: {body['max_tokens']} > {LIMIT}, which is the maximum"
            error = {"type": "invalid_request_error", "message": message}
            return web.json_response({"type": "error", "error": error}, status=400)
        usage = {"input_tokens": 8, "output_tokens": 1}
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"]}
        if not body.get("stream"):
            content = [{"type": "text", "text": ANSWER}]
            whole = {**message, "content": content, "stop_reason": "end_turn", "usage": usage}
            return web.json_response({**whole, "stop_sequence": None})
        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
        delta = {"type": "text_delta", "text": ANSWER}
        return await _sse(
            request,
            [
                ("message_start", {"type": "message_start", "message": {**start, "usage": usage}}),
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
                ),
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                ),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": 1},
                    },
                ),
                ("message_stop", {"type": "message_stop"}),
            ],
        )

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        seen.append(("openai", asked))
        if _too_many(asked):
            error = {
                "message": f"max_tokens is too large: {asked}. This model supports at most"
                f" {LIMIT} completion tokens, whereas you provided {asked}.",
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": None,
            }
            return web.json_response({"error": error}, status=400)
        head = {"id": "chatcmpl-1", "created": int(time.time()), "model": body["model"]}
        usage = {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}
        if not body.get("stream"):
            message = {"role": "assistant", "content": ANSWER}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return web.json_response(
                {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
        chunk = {**head, "object": "chat.completion.chunk"}
        delta = {"role": "assistant", "content": ANSWER}
        return await _sse(
            request,
            [
                (None, {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}),
                (None, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
                (None, {**chunk, "choices": [], "usage": usage}),
                (None, "[DONE]"),
            ],
        )

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/chat/completions", chat)
    return app


def _config(port: int, limits: bool = True) -> dict[str, Any]:
    """`limits`: the models' output limits are in the config (else turnout learns them from
    the upstream's refusal)."""
    base = f"http://127.0.0.1:{port}"
    return {
        "providers": {
            "claude": {"kind": "anthropic", "base_url": base, "api_key": "${SIM_ANTHROPIC_KEY}"},
            "compat": {"kind": "openai", "base_url": f"{base}/v1"},
        },
        "models": {
            "sonnet": {
                "provider": "claude",
                "model": "claude-sonnet-x",
                **({"max_output_tokens": LIMIT} if limits else {}),
            },
            "scout": {
                "provider": "compat",
                "model": "scout-x",
                **({"max_output_tokens": LIMIT} if limits else {}),
            },
        },
        # route names litellm cannot look up, so it falls back to its largest default
        "routes": {"claude": {"targets": ["sonnet"]}, "compat": {"targets": ["scout"]}},
    }


async def _text(answer: Any, stream: bool) -> str:
    if not stream:
        return str(answer.choices[0].message.content)
    chunks: AsyncIterator[Any] = answer
    return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])


def _headers(answer: Any) -> dict[str, str]:
    """The gateway's response headers as litellm hands them on (prefixed `llm_provider-`)."""
    return answer._hidden_params.get("additional_headers") or {}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_litellm_on_the_anthropic_endpoint_with_its_default_max_tokens(
    gateway_factory, stream: bool
) -> None:
    seen: list[tuple[str, Any]] = []
    with serve_app(limited_provider(seen)) as port:
        gateway = gateway_factory(_config(port), env=SIM_ANTHROPIC_ENV)
        answer = await litellm.acompletion(
            model="anthropic/claude",
            api_base=gateway.url,
            api_key="unused",
            messages=QUESTION,
            stream=stream,
            max_retries=0,
        )
        assert await _text(answer, stream) == ANSWER
    # litellm asked for its default, and the upstream was asked for what the model gives
    assert seen == [("anthropic", LIMIT)]
    clamped = _headers(answer).get("llm_provider-x-turnout-max-tokens")
    assert clamped == f"{LIMIT} (asked 128000)"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_litellm_on_the_openai_endpoint(gateway_factory, stream: bool) -> None:
    seen: list[tuple[str, Any]] = []
    with serve_app(limited_provider(seen)) as port:
        gateway = gateway_factory(_config(port))
        common = {"api_base": gateway.base_url, "api_key": "unused", "max_retries": 0}
        # litellm's own default on this endpoint: no max_tokens at all
        plain = await litellm.acompletion(
            model="openai/compat", messages=QUESTION, stream=stream, **common
        )
        assert await _text(plain, stream) == ANSWER
        # a caller's own large value is asked of the model as what it can give
        large = await litellm.acompletion(
            model="openai/compat", messages=QUESTION, stream=stream, max_tokens=128_000, **common
        )
        assert await _text(large, stream) == ANSWER
    assert seen == [("openai", None), ("openai", LIMIT)]
    assert _headers(large).get("llm_provider-x-turnout-max-tokens") == f"{LIMIT} (asked 128000)"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_an_output_limit_missing_from_the_config_is_learned_from_the_upstream(
    gateway_factory, stream: bool
) -> None:
    """No `max_output_tokens` configured: the upstream's 400 says how many the model can
    write, turnout asks again for that many (once), and clamps before asking from then on."""
    seen: list[tuple[str, Any]] = []
    with serve_app(limited_provider(seen)) as port:
        gateway = gateway_factory(_config(port, limits=False), env=SIM_ANTHROPIC_ENV)
        for _ in range(2):
            answer = await litellm.acompletion(
                model="anthropic/claude",
                api_base=gateway.url,
                api_key="unused",
                messages=QUESTION,
                stream=stream,
                max_retries=0,
            )
            assert await _text(answer, stream) == ANSWER
            clamped = _headers(answer).get("llm_provider-x-turnout-max-tokens")
            assert clamped == f"{LIMIT} (asked 128000)"
        common = {"api_base": gateway.base_url, "api_key": "unused", "max_retries": 0}
        for _ in range(2):
            large = await litellm.acompletion(
                model="openai/compat",
                messages=QUESTION,
                stream=stream,
                max_tokens=128_000,
                **common,
            )
            assert await _text(large, stream) == ANSWER
    # each model refused once; every later request was clamped before it was sent
    assert seen == [
        ("anthropic", 128_000),
        ("anthropic", LIMIT),
        ("anthropic", LIMIT),
        ("openai", 128_000),
        ("openai", LIMIT),
        ("openai", LIMIT),
    ]
