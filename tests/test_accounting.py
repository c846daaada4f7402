"""Cost, savings and the ledger, end to end: a real gateway process, real SQLite and the real
PostgreSQL on this machine, the official SDK as client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.conftest import sdk_client
from tests.services import postgres_server
from tests.upstreams import serve_app, shared_sim, usage_reporting_upstream

CHEAP = {"input": 0.08, "output": 0.30}
DEAR = {"input": 1.00, "output": 5.00, "cached_input": 0.10}


@pytest.fixture
def pg_dsn():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
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


def _config(sim, ledger: dict | None = None) -> dict:
    config = {
        "providers": {"sim": {"kind": "openai", "base_url": sim.base_url}},
        "models": {
            "scout": {"provider": "sim", "price": CHEAP, "supports": ["tools", "json"]},
            "haiku": {"provider": "sim", "price": DEAR, "supports": ["tools", "json"]},
        },
        "routes": {"chat": {"targets": ["scout", "haiku"], "baseline": "haiku"}},
    }
    if ledger:
        config["ledger"] = ledger
    return config


def _sqlite_rows(path: Path) -> list[dict]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM ledger ORDER BY started_at")]


def test_costs_and_savings_of_primary_and_fallback(gateway_factory, tmp_path) -> None:
    with shared_sim({"scout": {"reply": "cheap answer"}, "haiku": {"reply": "dear answer"}}) as sim:
        gateway = gateway_factory(_config(sim))
        client = sdk_client(gateway)
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hello there"}]
        )
        usage = raw.parse().usage
        cheap = (usage.prompt_tokens * 0.08 + usage.completion_tokens * 0.30) / 1e6
        assert usage.model_extra["cost"] == pytest.approx(cheap, abs=1e-12)  # in the body too
        dear = (usage.prompt_tokens * 1.00 + usage.completion_tokens * 5.00) / 1e6
        assert float(raw.headers["x-turnout-cost-usd"]) == pytest.approx(cheap, abs=1e-8)
        assert float(raw.headers["x-turnout-saved-usd"]) == pytest.approx(dear - cheap, abs=1e-8)

        sim.set("scout", error_rate={"500": 1.0})  # the fallback answers: no saving
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hello there"}]
        )
        usage = raw.parse().usage
        dear = (usage.prompt_tokens * 1.00 + usage.completion_tokens * 5.00) / 1e6
        assert float(raw.headers["x-turnout-cost-usd"]) == pytest.approx(dear, abs=1e-8)
        assert float(raw.headers["x-turnout-saved-usd"]) == pytest.approx(0, abs=1e-12)
    gateway.stop()  # drains the ledger
    rows = _sqlite_rows(tmp_path / "turnout.db")
    assert [r["model"] for r in rows] == ["scout", "haiku"]
    assert rows[0]["cost_usd"] == pytest.approx(cheap, abs=1e-9)
    assert json.loads(rows[1]["attempts"]) == [{"model": "scout", "reason": "server_error(500)"}]
    assert rows[1]["baseline_cost_usd"] == pytest.approx(rows[1]["cost_usd"])


def test_streams_carry_their_cost_in_the_usage_chunk(gateway_factory) -> None:
    with shared_sim({"scout": {"reply": "cheap answer"}, "haiku": {}}) as sim:
        gateway = gateway_factory(_config(sim))
        chunks = list(
            sdk_client(gateway).chat.completions.create(
                model="chat",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    usage = chunks[-1].usage
    cheap = (usage.prompt_tokens * 0.08 + usage.completion_tokens * 0.30) / 1e6
    assert usage.model_extra["cost"] == pytest.approx(cheap, abs=1e-12)


def test_cached_tokens_are_priced_at_the_cached_rate_once(gateway_factory, tmp_path) -> None:
    usage = {
        "prompt_tokens": 10_000,
        "completion_tokens": 1_000,
        "prompt_tokens_details": {"cached_tokens": 8_000},
    }
    with serve_app(usage_reporting_upstream(usage)) as port:
        config = {
            "providers": {"up": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}},
            "models": {"haiku": {"provider": "up", "price": DEAR}},
            "routes": {"chat": {"targets": ["haiku"]}},
        }
        gateway = gateway_factory(config)
        raw = sdk_client(gateway).chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "x"}]
        )
    expected = (2_000 * 1.00 + 8_000 * 0.10 + 1_000 * 5.00) / 1e6  # not 10,000 at full rate
    assert float(raw.headers["x-turnout-cost-usd"]) == pytest.approx(expected)
    gateway.stop()
    row = _sqlite_rows(tmp_path / "turnout.db")[0]
    assert (row["prompt_tokens"], row["cached_tokens"], row["completion_tokens"]) == (
        10_000,
        8_000,
        1_000,
    )


async def _load(base_url: str, total: int, abandon_every: int = 4) -> dict[str, int]:
    """`total` concurrent requests; every `abandon_every`-th is a stream dropped halfway."""
    seen = {"ok": 0, "abandoned": 0}
    connector = aiohttp.TCPConnector(limit=0)

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        stream = i % 2 == 0
        body = {
            "model": "chat",
            "stream": stream,
            "messages": [{"role": "user", "content": f"request {i}"}],
        }
        async with session.post(base_url + "/chat/completions", json=body) as response:
            assert response.status == 200
            if stream and i % abandon_every == 0:
                await response.content.readline()  # first chunk, then hang up
                response.close()
                seen["abandoned"] += 1
                return
            await response.read()
            seen["ok"] += 1

    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(i, session) for i in range(total)))
    return seen


SLOW_STREAM = {"reply": " ".join(f"w{i}" for i in range(40)), "tokens_per_second": 400}


def _ledger(backend: str, request) -> tuple[dict, dict | None]:
    """(gateway env, ledger config) for a backend: PostgreSQL gets a fresh database."""
    if backend == "sqlite":
        return {}, None
    dsn = request.getfixturevalue("pg_dsn")
    return {"TURNOUT_LEDGER_DSN": dsn}, {"backend": "postgres", "dsn": "${TURNOUT_LEDGER_DSN}"}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_thousand_concurrent_requests_make_a_thousand_rows(
    gateway_factory, tmp_path, backend, request
) -> None:
    env, ledger = _ledger(backend, request)
    with shared_sim({"scout": SLOW_STREAM, "haiku": SLOW_STREAM}) as sim:
        gateway = gateway_factory(_config(sim, ledger), env=env)
        seen = asyncio.run(_load(gateway.base_url, 1000))
        assert seen["ok"] + seen["abandoned"] == 1000 and seen["abandoned"] >= 200
        gateway.stop()
    rows = _rows(backend, tmp_path, env.get("TURNOUT_LEDGER_DSN"))
    assert len(rows) == 1000
    assert len({r["id"] for r in rows}) == 1000
    outcomes = {r["outcome"] for r in rows}
    assert outcomes <= {"ok", "client_closed"} and "client_closed" in outcomes
    closed = [r for r in rows if r["outcome"] == "client_closed"]
    # each abandoned request is still counted: estimated when the client left before the
    # upstream reported usage, the upstream's own figures when its whole stream (usage
    # included) had arrived before the gateway found the client gone (a loaded machine)
    assert all(r["prompt_tokens"] > 0 for r in closed)
    assert all(r["usage_estimated"] or r["completion_tokens"] > 0 for r in closed)


def _rows(backend: str, tmp_path: Path, dsn: str | None) -> list[dict]:
    if backend == "sqlite":
        return _sqlite_rows(tmp_path / "turnout.db")

    async def fetch() -> list[dict]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch("SELECT * FROM ledger")]
        finally:
            await conn.close()

    return asyncio.run(fetch())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigterm_during_load_loses_no_row(gateway_factory, tmp_path, backend, request) -> None:
    env, ledger = _ledger(backend, request)
    with shared_sim({"scout": SLOW_STREAM, "haiku": SLOW_STREAM}) as sim:
        gateway = gateway_factory(_config(sim, ledger), env=env)
        seen = {"accepted": 0, "answered": 0}
        in_flight = asyncio.Event()

        async def load() -> None:
            async def one(i: int, session: aiohttp.ClientSession) -> None:
                body = {
                    "model": "chat",
                    "stream": i % 2 == 0,
                    "messages": [{"role": "user", "content": f"r{i}"}],
                }
                try:
                    async with session.post(gateway.base_url + "/chat/completions", json=body) as r:
                        seen["accepted"] += 1  # the gateway took it: it owes a row
                        if seen["accepted"] >= 50:
                            in_flight.set()
                        await r.read()
                        seen["answered"] += 1
                except aiohttp.ClientError:
                    pass  # refused or cut when the gateway stopped

            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                tasks = [asyncio.create_task(one(i, session)) for i in range(300)]
                await asyncio.wait_for(in_flight.wait(), 20)  # requests in flight ...
                gateway.process.send_signal(signal.SIGTERM)  # ... when the stop comes
                await asyncio.gather(*tasks)

        asyncio.run(load())
        assert gateway.process.wait(timeout=30) == 0
    rows = _rows(backend, tmp_path, env.get("TURNOUT_LEDGER_DSN"))
    # every request the gateway accepted has its row; none twice
    assert len(rows) >= seen["accepted"] >= 50
    assert seen["answered"] > 0
    assert len({r["id"] for r in rows}) == len(rows)


def _turnout(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "turnout.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_report_matches_a_direct_sum_over_the_ledger(gateway_factory, tmp_path) -> None:
    with shared_sim({"scout": {"reply": "a b c"}, "haiku": {"reply": "d e f g"}}) as sim:
        config = _config(sim)
        gateway = gateway_factory(config)
        client = sdk_client(gateway)
        for i in range(6):
            if i == 3:
                sim.set("scout", error_rate={"500": 1.0})
            client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": f"q{i}"}]
            )
        gateway.stop()
    config_path = tmp_path / "report.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(config))
    env = {"TURNOUT_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    result = _turnout(
        "report", "--config", str(config_path), "--since", "1h", "--format", "json", env=env
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    with sqlite3.connect(tmp_path / "turnout.db") as db:
        cost, baseline, n = db.execute(
            "SELECT sum(cost_usd), sum(baseline_cost_usd), count(*) FROM ledger"
        ).fetchone()
        by_model = dict(db.execute("SELECT model, sum(cost_usd) FROM ledger GROUP BY model"))
    assert n == 6
    totals = report["totals"]
    assert totals["spend_usd"] == pytest.approx(cost, rel=1e-12)
    assert totals["baseline_usd"] == pytest.approx(baseline, rel=1e-12)
    assert totals["savings_usd"] == pytest.approx(baseline - cost, rel=1e-9)
    assert {m["name"]: m["spend_usd"] for m in report["models"]} == pytest.approx(by_model)
    assert set(by_model) == {"scout", "haiku"}
    table = _turnout("report", "--config", str(config_path), "--since", "1h", env=env)
    assert table.returncode == 0 and "scout" in table.stdout


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_capture_keeps_redacted_prompts_and_answers(gateway_factory, tmp_path, stream) -> None:
    with shared_sim({"scout": {"reply": "write to ops@example.com"}, "haiku": {}}) as sim:
        config = _config(sim)
        config["routes"]["chat"]["capture"] = {"redact": ["email", "secret"]}
        config["routes"]["plain"] = {"targets": ["scout"]}  # not captured
        gateway = gateway_factory(config)
        client = sdk_client(gateway)
        prompt = "my key is sk-live-0123456789abcdefXYZ and I am jane@corp.example"
        for route in ("chat", "plain"):
            if stream:
                chunks = client.chat.completions.create(
                    model=route, messages=[{"role": "user", "content": prompt}], stream=True
                )
                assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                client.chat.completions.create(
                    model=route, messages=[{"role": "user", "content": prompt}]
                )
        gateway.stop()
    captures = tmp_path / "captures"
    assert sorted(p.name for p in captures.iterdir()) == ["chat.jsonl"]
    lines = (captures / "chat.jsonl").read_text().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    text = json.dumps(line)
    assert "sk-live" not in text and "jane@corp" not in text and "ops@example" not in text
    assert line["request"]["messages"][0]["content"] == "my key is [redacted] and I am [redacted]"
    assert line["response"]["content"] == "write to [redacted]"
    assert line["model"] == "scout"
    ledger_ids = {r["id"] for r in _sqlite_rows(tmp_path / "turnout.db")}
    assert line["id"] in ledger_ids  # joins the ledger row
