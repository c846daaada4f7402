"""`turnout serve --workers N`: processes sharing one port, and their health through Redis."""

from __future__ import annotations

import signal
import time
import uuid

from tests.conftest import http, sdk_client
from tests.upstreams import shared_sim

HEALTHY = {"reply": "primary answered", "tokens_per_second": 5000}
BACKUP = {"reply": "backup answered", "tokens_per_second": 5000}


def _config(sim) -> dict:
    return {
        "providers": {"sim": {"kind": "openai", "base_url": sim.base_url}},
        "models": {"primary": {"provider": "sim"}, "backup": {"provider": "sim"}},
        "routes": {"chat": {"targets": ["primary", "backup"]}},
        "health": {"breaker": {"consecutive_failures": 3, "open_for": "30s"}},
        "state": {"backend": "redis", "prefix": f"turnout-test-{uuid.uuid4().hex[:8]}"},
    }


def _worker_pids(gateway, want: int = 2, timeout: float = 20.0) -> set[int]:
    """The pids answering /health on fresh connections, once `want` of them are up."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < want and time.monotonic() < deadline:
        pids.add(gateway.get("/health").json()["pid"])
    return pids


def _fresh_ask(gateway) -> tuple[int, dict[str, str]]:
    """A request on a new connection, so the kernel may hand it to either worker."""
    body = b'{"model": "chat", "messages": [{"role": "user", "content": "hello"}]}'
    result = http("POST", gateway.base_url + "/chat/completions", body)
    return result.status, result.headers


def test_two_workers_share_the_port_and_the_health(gateway_factory) -> None:
    with shared_sim({"primary": HEALTHY, "backup": BACKUP}) as sim:
        gateway = gateway_factory(_config(sim), args=("--workers", "2"))
        pids = _worker_pids(gateway)
        assert len(pids) == 2  # both workers accept on the one port
        assert gateway.process.pid not in pids  # the supervisor only supervises

        sim.set("primary", error_rate={"500": 1.0})
        client = sdk_client(gateway)  # one keep-alive connection: one worker sees it die
        for _ in range(3):
            answer = client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hello"}]
            )
            assert answer.choices[0].message.content == "backup answered"
        # every request, whichever worker takes it, now skips the dead model at once
        for _ in range(30):
            status, headers = _fresh_ask(gateway)
            assert status == 200
            assert headers["x-turnout-fallback"].startswith("primary=open(")
            assert headers["x-turnout-attempts"] == "1"


def test_sigterm_stops_every_worker(gateway_factory) -> None:
    with shared_sim({"primary": HEALTHY, "backup": BACKUP}) as sim:
        gateway = gateway_factory(_config(sim), args=("--workers", "2"))
        pids = _worker_pids(gateway)
        assert len(pids) == 2
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=20) == 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                assert "zombie" in status.read()
        except FileNotFoundError:
            pass  # gone, as it should be
