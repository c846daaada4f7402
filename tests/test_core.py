"""The request core (issue 12): one call, `Gateway.handle`, behind every ingress, reading the
runtime snapshot once. An in-process gateway on a real port in front of the simulator, driven
by the openai SDK; the runtime is swapped by hand, as a config reload will swap it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import openai

from tests.conftest import free_port
from tests.upstreams import shared_sim
from turnout.config import parse_config
from turnout.gateway import Gateway, Runtime
from turnout.server import GatewayServer

SLOW = {"reply": " ".join(f"w{n}" for n in range(40)), "tokens_per_second": 40}
FAST = {"reply": "the new runtime answered", "tokens_per_second": 5000}


def _config(base_url: str, target: str, tmp: str) -> dict[str, Any]:
    return {
        "providers": {"sim": {"kind": "openai", "base_url": base_url}},
        "models": {"old": {"provider": "sim"}, "new": {"provider": "sim"}},
        "routes": {"chat": {"targets": [target]}},
        "ledger": {"backend": "off"},
        "data_dir": tmp,
    }


async def test_a_request_keeps_the_runtime_it_started_with(tmp_path) -> None:
    """A stream that started on one runtime ends on it, though a new runtime (another target
    for its route) was installed half-way; the next request uses the new one."""
    with shared_sim({"old": SLOW, "new": FAST}) as sim:
        gateway = Gateway(parse_config(_config(sim.base_url, "old", str(tmp_path))))
        server = GatewayServer(gateway, "127.0.0.1", free_port())
        await server.start()
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0
        )
        first_chunk = threading.Event()

        def stream() -> tuple[set[str], str]:
            models, text = set(), []
            chunks = client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            for chunk in chunks:
                models.add(chunk.model)
                if chunk.choices and chunk.choices[0].delta.content:
                    text.append(chunk.choices[0].delta.content)
                    first_chunk.set()
            return models, "".join(text)

        swapped = Runtime.build(parse_config(_config(sim.base_url, "new", str(tmp_path))))
        try:
            running = asyncio.create_task(asyncio.to_thread(stream))
            assert await asyncio.to_thread(first_chunk.wait, 10)
            for provider in swapped.providers.values():
                await provider.start()
            gateway.runtime = swapped  # what a reload will do
            models, text = await running
            assert models == {"old"}
            assert text == SLOW["reply"]  # whole: the old runtime served it to its end

            answer = await asyncio.to_thread(
                client.chat.completions.create,
                model="chat",
                messages=[{"role": "user", "content": "hi"}],
            )
            assert answer.model == "new"
            assert answer.choices[0].message.content == FAST["reply"]
        finally:
            await server.close()
            for provider in swapped.providers.values():
                await provider.close()


async def test_the_runtime_is_read_when_the_request_arrives(tmp_path) -> None:
    """A request whose body is still arriving when a new runtime is installed is planned on
    the runtime of its arrival: the snapshot is read once, at the start."""
    with shared_sim({"old": FAST, "new": FAST}) as sim:
        gateway = Gateway(parse_config(_config(sim.base_url, "old", str(tmp_path))))
        server = GatewayServer(gateway, "127.0.0.1", free_port())
        await server.start()
        swapped = Runtime.build(parse_config(_config(sim.base_url, "new", str(tmp_path))))
        body = b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}'
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body[:10]
            )
            await writer.drain()
            await asyncio.sleep(0.2)  # the request has arrived; its body has not
            for provider in swapped.providers.values():
                await provider.start()
            gateway.runtime = swapped
            writer.write(body[10:])
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert b"x-turnout-model: old" in head.lower()
            writer.close()
        finally:
            await server.close()
            for provider in swapped.providers.values():
                await provider.close()
