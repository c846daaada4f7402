"""Pacing (health/pacing.py) reading rate-limit headers: a relative reset counts from when the
headers arrived, and a 429 that tells no limit paces nothing for good."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.conftest import sim_config
from turnout import clock
from turnout.config import parse_config
from turnout.events import AttemptFinished
from turnout.gateway import Gateway
from turnout.health.pacing import Pacer
from turnout.model import Outcome
from turnout.providers.sim import SimProvider
from turnout.server import GatewayServer
from turnout.sim.schema import SimBehaviour


async def test_a_bare_429_does_not_pace_the_model_for_good() -> None:
    # every request a 429 with `x-ratelimit-remaining-requests: 0`, a reset and no limit
    limited = {"reply": "scout", "rate_limit_rate": 1.0, "retry_after": 1}
    config = sim_config(
        {"scout": limited, "haiku": {"reply": "haiku"}}, {"chat": {"targets": ["scout", "haiku"]}}
    )
    config["auth"] = {"required": False}
    config["ledger"] = {"backend": "off"}
    gateway = Gateway(parse_config(config))
    async with GatewayServer(gateway, "127.0.0.1", 0) as server:
        client = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0
        )
        ask = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        first = await client.chat.completions.with_raw_response.create(**ask)
        assert first.headers["x-turnout-model"] == "haiku"
        assert "scout=rate_limited" in first.headers["x-turnout-fallback"]
        provider = gateway.runtime.providers["sim"]
        assert isinstance(provider, SimProvider)
        provider.sim.state.set_behaviour("scout", SimBehaviour(reply="scout"))  # it recovers
        await asyncio.sleep(1.5)  # past the 429's reset and Retry-After (1 s)
        answered = []
        for _ in range(3):
            raw = await client.chat.completions.with_raw_response.create(**ask)
            assert "x-turnout-fallback" not in raw.headers
            answered.append(raw.parse().choices[0].message.content)
        assert answered == ["scout"] * 3
        await client.close()


def test_a_relative_reset_counts_from_when_the_headers_arrived() -> None:
    """An answer read 30 s after it was sent (a long stream): `reset 40s` was said when the
    upstream took the request in, so the window ends about 10 s from now, not 40. Counted from
    when the headers arrived, not from when the request was sent: the upstream said it after
    the request was sent, and a window thought to end early lets a request into a spent one."""
    pacer = Pacer(None, "test")
    now = clock.now()
    headers = {
        "x-ratelimit-limit-requests": "20",
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-reset-requests": "40s",
    }
    sent, arrived = now - 30, now - 29.5
    outcome = Outcome(
        "chat", "full", "openai", ok=True, started=sent, headers=headers, headers_at=arrived
    )
    pacer.on_attempt(AttemptFinished(outcome))
    window = pacer.local["full"]
    assert window.reset_at == pytest.approx(arrived + 40, abs=0.1)
    assert window.remaining == 5 and window.limit == 20
    # an answer about a window that ended before it was read tells nothing
    stale = Outcome("chat", "mini", "openai", ok=True, started=now - 60, headers=headers)
    pacer.on_attempt(AttemptFinished(stale))
    assert "mini" not in pacer.local
