"""Many replicas, one gateway (issue 17): three gateway processes on three ports, sharing the
real Redis (`state`) and PostgreSQL (`ledger`), behave as one: one key rate limit, one
budget, one session map, one provider rate limit; and Redis going away fails no request.

The key limit's window is the real minute (rpm): that test runs for a minute, alone."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import openai
import pytest
import yaml

from tests.conftest import free_port, ledger_rows
from tests.services import postgres_server, redis_url
from tests.upstreams import shared_sim

MESSAGES = [{"role": "user", "content": "hello"}]
PRICE = {"input": 100.0, "output": 500.0}  # USD per 1M tokens: a few tenths of a cent a request


@pytest.fixture
def pg_dsn():
    """A fresh PostgreSQL database for one test (the three gateways' one ledger). Tests ask
    for it before gateway_factory, so that it is dropped after their gateways stopped."""
    name = f"turnout_test_{uuid.uuid4().hex[:10]}"
    server = postgres_server()

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(f"{server}/test")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    yield f"{server}/{name}"
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class Cluster:
    """Three `turnout serve` processes with one config: the same Redis and PostgreSQL."""

    def __init__(self, gateway_factory, tmp_path, pg_dsn: str, config: dict) -> None:
        config.setdefault("state", {"backend": "redis", "url": redis_url()})
        config["state"]["prefix"] = f"turnout-test-{uuid.uuid4().hex[:8]}"
        config["ledger"] = {"backend": "postgres", "dsn": "${TURNOUT_LEDGER_DSN}"}
        self.config, self.dsn = config, pg_dsn
        self.env = {"TURNOUT_LEDGER_DSN": pg_dsn}
        self.path = tmp_path / "cluster.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.factory, self.gateways = gateway_factory, []

    def start(self, n: int = 3) -> Cluster:
        self.gateways = [self.factory(self.config, env=self.env) for _ in range(n)]
        assert len({g.port for g in self.gateways}) == n
        return self

    def key(self, name: str, *options: str) -> str:
        """`turnout keys create` against the shared ledger: the new key's secret."""
        result = subprocess.run(
            [sys.executable, "-m", "turnout.cli.main", "keys", "create", name, *options]
            + ["--config", str(self.path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **self.env},
        )
        assert result.returncode == 0, result.stderr
        return next(
            line.split(":", 1)[1].strip()
            for line in result.stdout.splitlines()
            if line.startswith("key:")
        )

    def client(self, i: int, key: str = "none") -> openai.OpenAI:
        gateway = self.gateways[i % len(self.gateways)]
        return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=30)

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()  # drains each one's ledger rows into PostgreSQL

    def events(self, i: int, admin_key: str) -> list[dict[str, Any]]:
        request = urllib.request.Request(
            self.gateways[i].url + "/admin/events",
            headers={"authorization": f"Bearer {admin_key}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def _sim_config(sim, models: dict[str, dict], route: dict) -> dict:
    return {
        "providers": {"sim": {"kind": "openai", "base_url": sim.base_url}},
        "models": {name: {"provider": "sim", **entry} for name, entry in models.items()},
        "routes": {"chat": route},
    }


def _ask(client: openai.OpenAI, **extra: Any) -> tuple[int, str, dict[str, str]]:
    """(status, error code or answering model, headers) of one chat request."""
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, **extra
        )
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        return exc.status_code, str(body.get("code")), dict(exc.response.headers)
    raw.parse()
    return raw.status_code, raw.headers.get("x-turnout-model", ""), dict(raw.headers)


# --- one key rate limit ------------------------------------------------------------------


def test_rpm_60_across_three_processes_for_a_minute_is_60(
    pg_dsn, gateway_factory, tmp_path
) -> None:
    with shared_sim({"m": {"reply": "ok", "tokens_per_second": 5000}}) as sim:
        config = _sim_config(sim, {"m": {}}, {"targets": ["m"]})
        config["auth"] = {"required": True}
        cluster = Cluster(gateway_factory, tmp_path, pg_dsn, config)
        key = cluster.key("limited", "--rpm", "60")
        cluster.start()
        clients = [cluster.client(i, key) for i in range(3)]
        seen: Counter[str] = Counter()
        start, i = time.monotonic(), 0
        # round-robin, about four requests a second: ~240 asked in the minute, 60 allowed
        while time.monotonic() - start < 59.0:
            status, what, _ = _ask(clients[i % 3])
            seen[f"{status} {what}"] += 1
            i += 1
            time.sleep(0.2)
        ok = seen["200 m"]
        assert set(seen) <= {"200 m", "429 key_rate_limited"}, seen
        assert abs(ok - 60) <= 3, seen  # one limit for the fleet: not 60 per process (180)
        assert seen["429 key_rate_limited"] > 100, seen


def test_tpm_is_counted_once_for_the_fleet(pg_dsn, gateway_factory, tmp_path) -> None:
    with shared_sim({"m": {"reply": "a few words of answer", "tokens_per_second": 5000}}) as sim:
        config = _sim_config(sim, {"m": {}}, {"targets": ["m"]})
        config["auth"] = {"required": True}
        cluster = Cluster(gateway_factory, tmp_path, pg_dsn, config)
        key = cluster.key("tokens", "--tpm", "150")
        cluster.start()
        seen: Counter[str] = Counter()
        for i in range(45):  # round-robin, one at a time
            status, what, _ = _ask(cluster.client(i, key))
            seen[f"{status} {what}"] += 1
        cluster.stop()
    rows = [r for r in ledger_rows("postgres", cluster.dsn) if r.status == 200]
    tokens = [r.prompt_tokens + r.completion_tokens for r in rows]
    assert set(seen) == {"200 m", "429 key_rate_limited"}, seen
    # spent until the window held 150 tokens, then refused on every process (not 150 each)
    assert 150 <= sum(tokens) < 150 + 2 * max(tokens), (sum(tokens), tokens)


# --- one budget ----------------------------------------------------------------------------


def test_daily_budget_under_concurrent_load_overspends_by_one_request_at_most(
    pg_dsn, gateway_factory, tmp_path
) -> None:
    with shared_sim({"m": {"reply": "a short answer", "tokens_per_second": 2000}}) as sim:
        config = _sim_config(sim, {"m": {"price": PRICE}}, {"targets": ["m"]})
        config["budgets"] = [{"scope": "route", "name": "chat", "daily_usd": 0.10}]
        cluster = Cluster(gateway_factory, tmp_path, pg_dsn, config).start()
        statuses: Counter[str] = Counter()
        lock = threading.Lock()

        def drive(i: int) -> None:
            """Asks until refused (reservations in flight may refuse before the spend does)."""
            client, status = cluster.client(i), 200
            while status == 200:
                status, what, _ = _ask(client, max_tokens=16)
                with lock:
                    statuses[f"{status} {what}"] += 1

        with ThreadPoolExecutor(12) as pool:  # four concurrent clients on each process
            list(pool.map(drive, range(12)))
        # then on, round-robin, until every process refuses: the budget is the fleet's
        refusals = 0
        for i in range(200):
            status, what, _ = _ask(cluster.client(i), max_tokens=16)
            statuses[f"{status} {what}"] += 1
            refusals = refusals + 1 if status == 429 else 0
            if refusals == 3:
                break
        assert refusals == 3, statuses
        cluster.stop()
    rows = [r for r in ledger_rows("postgres", cluster.dsn) if r.status == 200]
    spent = sum(r.cost_usd for r in rows)
    dearest = max(r.cost_usd for r in rows)
    assert set(statuses) <= {"200 m", "429 budget_exceeded"}, statuses
    assert len(rows) == statuses["200 m"]
    assert 0.10 <= spent <= 0.10 + dearest, (spent, dearest, len(rows))


# --- one session map -------------------------------------------------------------------------


def test_a_session_stays_on_one_model_whichever_process_serves_it(
    pg_dsn, gateway_factory, tmp_path
) -> None:
    models = {"a": {"reply": "from a"}, "b": {"reply": "from b"}}
    with shared_sim(models) as sim:
        route = {
            "targets": ["a", "b"],
            "policy": "weighted",
            "weights": {"a": 1, "b": 1},  # each process draws its own first choice
            "consistency": {"mode": "session"},
        }
        config = _sim_config(sim, {"a": {}, "b": {}}, route)
        cluster = Cluster(gateway_factory, tmp_path, pg_dsn, config).start()
        clients = [cluster.client(i) for i in range(3)]
        served: dict[str, set[str]] = {}
        for n in range(12):
            session = f"workflow-{n}"
            for step in range(6):  # round-robin: every step on another process
                status, model, _ = _ask(
                    clients[(n + step) % 3], extra_headers={"x-turnout-session": session}
                )
                assert status == 200
                served.setdefault(session, set()).add(model)
    assert all(len(models) == 1 for models in served.values()), served
    assert set().union(*served.values()) == {"a", "b"}  # the draw did differ between sessions


# --- one provider rate limit -----------------------------------------------------------------


def test_a_provider_limit_shared_by_three_processes_gets_no_429s(
    pg_dsn, gateway_factory, tmp_path
) -> None:
    limited = {  # 10 requests per 2-second window, enforced, and said in its headers
        "reply": "limited",
        "ratelimit_limit": 10,
        "ratelimit_reset": 2.0,
        "tokens_per_second": 5000,
    }
    with shared_sim({"limited": limited, "spare": {"reply": "spare"}}) as sim:
        config = _sim_config(sim, {"limited": {}, "spare": {}}, {"targets": ["limited", "spare"]})
        cluster = Cluster(gateway_factory, tmp_path, pg_dsn, config).start()
        for i in range(3):  # each process's first answer tells it of the limit
            assert _ask(cluster.client(i))[:2] == (200, "limited")
            time.sleep(0.3)
        time.sleep(1.2)  # and the fleet knows which models it paces
        answered: Counter[str] = Counter()
        lock = threading.Lock()
        deadline = time.monotonic() + 7.0  # three and a half windows

        def drive(i: int) -> None:
            client = cluster.client(i)
            while time.monotonic() < deadline:
                status, model, _ = _ask(client)
                with lock:
                    answered[f"{status} {model}"] += 1

        with ThreadPoolExecutor(9) as pool:
            list(pool.map(drive, range(9)))
        stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{sim.port}/sim/stats").read())
    assert set(answered) == {"200 limited", "200 spare"}, answered  # every request answered
    assert stats["limited"]["statuses"].get("429", 0) == 0, stats["limited"]
    assert stats["limited"]["requests"] >= 30, stats  # it served its windows' worth
    assert answered["200 spare"] > answered["200 limited"], answered  # the overflow


# --- Redis away ---------------------------------------------------------------------------------


def _own_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server installed to start one for this test")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    pytest.fail("redis-server did not start")


def test_redis_stopped_mid_run_fails_no_request(pg_dsn, gateway_factory, tmp_path) -> None:
    port = free_port()
    redis_process = _own_redis(port)
    try:
        with shared_sim({"a": {"reply": "from a"}, "b": {"reply": "from b"}}) as sim:
            route = {"targets": ["a", "b"], "consistency": {"mode": "session"}}
            config = _sim_config(sim, {"a": {"price": PRICE}, "b": {}}, route)
            config["auth"] = {"required": True}
            config["budgets"] = [{"scope": "route", "name": "chat", "daily_usd": 100.0}]
            config["state"] = {"backend": "redis", "url": f"redis://127.0.0.1:{port}/0"}
            cluster = Cluster(gateway_factory, tmp_path, pg_dsn, config)
            key = cluster.key("busy", "--rpm", "100000", "--daily-budget", "100")
            admin = cluster.key("ops", "--admin")
            cluster.start()
            statuses: Counter[int] = Counter()
            lock = threading.Lock()
            phase = {"stop": False}

            def drive(i: int) -> None:
                client = cluster.client(i, key)
                n = 0
                while not phase["stop"]:
                    headers = {"x-turnout-session": f"s{i}-{n % 3}"}
                    status, _, _ = _ask(client, max_tokens=16, extra_headers=headers)
                    with lock:
                        statuses[status] += 1
                    n += 1

            with ThreadPoolExecutor(6) as pool:
                running = [pool.submit(drive, i) for i in range(6)]
                time.sleep(1.5)
                redis_process.terminate()  # Redis goes away under load
                redis_process.wait(10)
                time.sleep(3.0)
                redis_process = _own_redis(port)  # and comes back
                time.sleep(3.0)
                phase["stop"] = True
                for future in running:
                    future.result()
            assert set(statuses) == {200}, statuses  # no request failed for it
            assert statuses[200] > 50
            for i, gateway in enumerate(cluster.gateways):
                log = gateway.log()
                assert "key limits and budgets are counted in this process" in log
                events = [e for e in cluster.events(i, admin) if e["type"] == "shared_state"]
                # lost (counting in this process), then rejoined once Redis was back
                assert events and not events[0]["shared"] and events[-1]["shared"], events
    finally:
        redis_process.terminate()
        redis_process.wait(10)
