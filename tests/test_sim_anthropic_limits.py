"""The sim's Anthropic Messages endpoint enforces `ratelimit_limit` as Anthropic tells it
(anthropic-ratelimit-requests-* headers with an RFC 3339 reset, a 429 `rate_limit_error` with
retry-after), and a `sim` provider with `dialect: anthropic` reaches it the way turnout reaches
Anthropic: pacing reads those headers and sends the request elsewhere before any 429."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime

import anthropic
import openai
import pytest

from turnout import clock
from turnout.config import parse_config
from turnout.gateway import Gateway
from turnout.providers.sim import SimProvider
from turnout.server import GatewayServer
from turnout.sim.schema import SimBehaviour
from turnout.sim.server import SimServer

HOURLY = {"reply": "claude", "ratelimit_limit": 2, "ratelimit_reset": "1h"}


@pytest.fixture
async def hour_windows() -> AsyncIterator[None]:
    # the sim's fixed windows of an hour start on the hour: begin the clock at one, so that no
    # window ends during the test
    clock.run_faster(1.0, start=time.time() // 3600 * 3600)
    try:
        yield
    finally:
        clock.run_real()


async def test_the_anthropic_endpoint_enforces_its_limit_in_anthropics_words(
    hour_windows: None,
) -> None:
    async with SimServer({"claude-haiku-4-5": SimBehaviour.model_validate(HOURLY)}) as sim:
        client = anthropic.AsyncAnthropic(
            base_url=sim.url.removesuffix("/v1"), api_key="unused", max_retries=0
        )
        ask = {
            "model": "claude-haiku-4-5",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}],
        }
        first = await client.messages.with_raw_response.create(**ask)
        headers = first.headers
        assert headers["anthropic-ratelimit-requests-limit"] == "2"
        assert headers["anthropic-ratelimit-requests-remaining"] == "1"
        reset = datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"]).timestamp()
        assert reset == pytest.approx(clock.now() // 3600 * 3600 + 3600, abs=1)
        second = await client.messages.with_raw_response.create(**ask)
        assert second.headers["anthropic-ratelimit-requests-remaining"] == "0"
        with pytest.raises(anthropic.RateLimitError) as refused:
            await client.messages.create(**ask)
        assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert refused.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert 0 < int(refused.value.response.headers["retry-after"]) <= 3600
        await client.close()


async def test_pacing_reads_anthropics_headers_and_skips_the_spent_model(
    hour_windows: None,
) -> None:
    config = {
        "providers": {
            "anthropic": {
                "kind": "sim",
                "dialect": "anthropic",
                "sim": {"claude-haiku-4-5": HOURLY},
            },
            "openrouter": {"kind": "sim", "sim": {"llama-4-scout": {"reply": "scout"}}},
        },
        "models": {
            "haiku": {"provider": "anthropic", "model": "claude-haiku-4-5"},
            "scout": {"provider": "openrouter", "model": "llama-4-scout"},
        },
        "routes": {"chat": {"targets": ["haiku", "scout"]}},
        "auth": {"required": False},
        "ledger": {"backend": "off"},
    }
    gateway = Gateway(parse_config(config))
    async with GatewayServer(gateway, "127.0.0.1", 0) as server:
        client = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0
        )
        ask = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        answers = [
            (await client.chat.completions.create(**ask)).choices[0].message.content
            for _ in range(4)
        ]
        # Haiku's hour holds two requests: the answers told what was left, so the next ones
        # went to Scout before Anthropic's endpoint had to say 429
        assert answers == ["claude", "claude", "scout", "scout"]
        provider = gateway.runtime.providers["anthropic"]
        assert isinstance(provider, SimProvider)
        assert provider.sim.state.models["claude-haiku-4-5"].statuses == {"200": 2}
        await client.close()
