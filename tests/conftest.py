"""Fixtures that run the real thing: a `turnout serve` process on a real port."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml


@dataclass
class HTTPResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, body: bytes | None = None, timeout: float = 30) -> HTTPResult:
    """A plain HTTP call (for what the SDKs will not send: broken JSON, odd methods)."""
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return HTTPResult(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as exc:
        return HTTPResult(exc.code, dict(exc.headers.items()), exc.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> HTTPResult:
        return http("GET", self.url + path)

    def post(self, path: str, body: bytes) -> HTTPResult:
        return http("POST", self.url + path, body)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_gateway(
    config: dict[str, Any] | None,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    ready_timeout: float = 60.0,
    args: tuple[str, ...] = (),
) -> GatewayProcess:
    """Run `turnout serve` with this config (None: the embedded defaults) on a free port."""
    port = free_port()
    command = [sys.executable, "-m", "turnout.cli.main", "serve", "--port", str(port), *args]
    if config is not None:
        config_path = tmp_path / f"turnout-{port}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        command += ["--config", str(config_path)]
    log_path = tmp_path / f"turnout-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            # each gateway keeps its ledger (SQLite) in the test's own directory
            env={**os.environ, "TURNOUT_DATA_DIR": str(tmp_path), **(env or {})},
        )
    gateway = GatewayProcess(process, port, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"turnout serve exited {process.returncode}:\n{gateway.log()}")
        try:
            if http("GET", gateway.url + "/health", timeout=1).status == 200:
                return gateway
        except OSError:
            pass
        time.sleep(0.05)
    gateway.stop()
    raise RuntimeError(f"turnout serve did not become ready:\n{gateway.log()}")


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Any]:
    """Start gateways with `gateway_factory(config_dict, env=...)`; all stop after the test."""
    started: list[GatewayProcess] = []

    def factory(
        config: dict[str, Any] | None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> GatewayProcess:
        gateway = start_gateway(config, tmp_path, env, args=args)
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        gateway.stop()


def sim_config(
    models: dict[str, dict[str, Any]],
    routes: dict[str, Any],
    *,
    prices: dict[str, dict[str, float]] | None = None,
    seed: int = 1,
) -> dict[str, Any]:
    """A config whose models all live on one in-process sim provider.

    `models` maps a model name to its sim behaviour (plus optional `context_window`)."""
    behaviours, model_entries = {}, {}
    for name, spec in models.items():
        spec = dict(spec)
        entry: dict[str, Any] = {"provider": "sim", "model": name}
        # the simulator can do everything unless a test says otherwise
        entry["supports"] = spec.pop("supports", ["tools", "json", "vision"])
        if "context_window" in spec:
            entry["context_window"] = spec.pop("context_window")
        if prices and name in prices:
            entry["price"] = prices[name]
        behaviours[name] = spec
        model_entries[name] = entry
    return {
        "providers": {"sim": {"kind": "sim", "seed": seed, "sim": behaviours}},
        "models": model_entries,
        "routes": routes,
    }


def sdk_client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=20)


def ask(gateway: GatewayProcess, content: str = "hello", stream: bool = False) -> tuple[str, Any]:
    """One chat request to route `chat` through the openai SDK: (answer text, headers)."""
    client = sdk_client(gateway)
    messages = [{"role": "user", "content": content}]
    if not stream:
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=messages)
        return raw.parse().choices[0].message.content, raw.headers
    with client.chat.completions.with_streaming_response.create(
        model="chat", messages=messages, stream=True
    ) as response:
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
        return text, response.headers


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fuzz suite's run size: how many cases each property generated (issue 11)."""
    strategies = sys.modules.get("tests.fuzz_strategies")
    cases = getattr(strategies, "CASES", None)
    if cases:
        parts = ", ".join(f"{name} {count}" for name, count in sorted(cases.items()))
        terminalreporter.write_line(f"fuzz: {sum(cases.values())} cases ({parts})")
    for name, statuses in sorted(getattr(strategies, "STATUSES", {}).items()):
        seen = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
        terminalreporter.write_line(f"fuzz: {name} answered {seen}")


def ledger_rows(backend: str, where: str) -> list[Any]:
    """Every row of a ledger a gateway wrote (SQLite file path, or PostgreSQL DSN)."""
    from turnout.accounting.store import make_store

    async def read() -> list[Any]:
        store = make_store(backend, path=where, dsn=where)
        await store.start()
        try:
            return await store.rows()
        finally:
            await store.close()

    return asyncio.run(read())


def turnout_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """`turnout ARGS...` as a user runs it, in a child process; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "turnout.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        env={**os.environ, **(env or {})},
    )
