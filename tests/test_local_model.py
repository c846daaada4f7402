"""The embedded default: SmolLM2-135M through llama.cpp, in process, with no key at all."""

from __future__ import annotations

import os
import threading
import time

import openai
import pytest

from tests.conftest import start_gateway
from tests.optional import local_model_missing

# the cloud keys the embedded defaults would pick up; unset so the test sees only the local model
CLOUD_KEYS = (
    "OPENROUTER_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "GROQ_API_KEY",
    "CEREBRAS_API_KEY",
    "GEMINI_API_KEY",
    "CLOUDFLARE_API_TOKEN",
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    missing = local_model_missing()
    if missing:
        pytest.skip(missing)
    saved = {k: os.environ.pop(k) for k in CLOUD_KEYS if k in os.environ}
    try:
        gateway = start_gateway(None, tmp_path_factory.mktemp("local"))  # embedded defaults
    finally:
        os.environ.update(saved)
    yield gateway
    gateway.stop()


def test_embedded_defaults_serve_route_chat_with_the_local_model(gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    assert {m.id for m in client.models.list()} == {"chat", "smol"}
    raw = client.chat.completions.with_raw_response.create(
        model="chat",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
    )
    answer = raw.parse()
    assert raw.headers["x-turnout-model"] == "smol"
    text = answer.choices[0].message.content
    assert isinstance(text, str) and text.strip()
    assert answer.usage.prompt_tokens > 5
    assert 0 < answer.usage.completion_tokens <= 24
    assert answer.choices[0].finish_reason in {"stop", "length"}


def test_local_model_streams(gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="smol",
            messages=[{"role": "user", "content": "Count from one to five."}],
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) >= 3  # real token-by-token streaming, not one blob
    usage = chunks[-1].usage
    assert usage.completion_tokens == len(pieces)
    assert usage.prompt_tokens > 5


def test_gateway_keeps_serving_while_the_model_generates(gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    done = threading.Event()

    def generate() -> None:
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "Write a long story about a dragon."}],
            max_tokens=120,
            temperature=0,
        )
        done.set()

    worker = threading.Thread(target=generate)
    worker.start()
    time.sleep(0.3)  # the generation is under way
    health_answers = 0
    while not done.is_set() and health_answers < 20:
        assert gateway.get("/health").status == 200
        health_answers += 1
    worker.join(60)
    # generation took long enough for the loop to answer health checks in the middle of it
    assert health_answers >= 5
