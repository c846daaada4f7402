"""A max_tokens larger than a model can give (issue 13, item 4). Client libraries send large
defaults (litellm sends max_tokens=128000 to the Anthropic endpoint): by default turnout asks
each target for what it can give (its max_output_tokens, its context window less the prompt)
and says so in a header; a strict route skips such targets instead. A real gateway process in
front of an upstream that, like real providers, refuses a max_tokens over its limit."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web

from tests.conftest import sdk_client
from tests.upstreams import serve_app

LIMIT = 4096  # the upstream's own output limit


def limited_upstream(seen: list[int | None]) -> web.Application:
    """An OpenAI-compatible upstream that refuses max_tokens above LIMIT with a 400."""

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        asked = body.get("max_tokens")
        seen.append(asked)
        if asked is not None and asked > LIMIT:
            error = {
                "message": f"max_tokens: {asked} > {LIMIT}, the maximum for this model",
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": None,
            }
            return web.json_response({"error": error}, status=400)
        answer = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "fits"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
        }
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def _config(port: int, **route: Any) -> dict[str, Any]:
    return {
        "providers": {"up": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}},
        "models": {
            "small": {"provider": "up", "max_output_tokens": LIMIT, "context_window": 32_000},
            "windowed": {"provider": "up", "context_window": 3_000},
        },
        "routes": {"chat": {"targets": ["small"], **route}, "tight": {"targets": ["windowed"]}},
    }


def test_a_large_default_max_tokens_is_clamped_to_what_the_model_gives(gateway_factory) -> None:
    seen: list[int | None] = []
    with serve_app(limited_upstream(seen)) as port:
        gateway = gateway_factory(_config(port))
        client = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
        raw = client.messages.with_raw_response.create(
            model="chat",
            max_tokens=128_000,
            messages=[{"role": "user", "content": "hi"}],
            timeout=30,  # (else the SDK refuses a non-streamed request this large itself)
        )
        assert raw.parse().content[0].text == "fits"
        assert seen == [LIMIT]  # the upstream was asked for what it can give
        assert raw.headers["x-turnout-max-tokens"] == f"{LIMIT} (asked 128000)"

        # a window less the prompt: a 3,000-token window leaves less than 100,000 for output
        answer = sdk_client(gateway).chat.completions.with_raw_response.create(
            model="tight", max_tokens=100_000, messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.parse().choices[0].message.content == "fits"
        assert 2_900 < seen[-1] < 3_000
        assert answer.headers["x-turnout-max-tokens"] == f"{seen[-1]} (asked 100000)"

        # within the limit: asked as it is, and no header
        plain = sdk_client(gateway).chat.completions.with_raw_response.create(
            model="chat", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        )
        assert seen[-1] == 100 and "x-turnout-max-tokens" not in plain.headers


def test_a_strict_route_refuses_what_no_model_can_give(gateway_factory) -> None:
    seen: list[int | None] = []
    with serve_app(limited_upstream(seen)) as port:
        gateway = gateway_factory(_config(port, max_tokens="strict"))
        with pytest.raises(openai.BadRequestError) as refused:
            sdk_client(gateway).chat.completions.create(
                model="chat", max_tokens=128_000, messages=[{"role": "user", "content": "hi"}]
            )
        assert refused.value.code == "max_tokens_too_large"
        assert refused.value.param == "max_tokens"
        assert "small: max_tokens(128000>4096)" in refused.value.message
        assert seen == []  # nothing was sent upstream
