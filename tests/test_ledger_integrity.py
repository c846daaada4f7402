"""Every request gets its ledger row, whatever strings a client sends, and what a client
sends is kept within bounds (memory, ledger, echoed errors). Real gateway processes, raw
HTTP for what SDKs will not send, and the real SQLite and PostgreSQL ledgers."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GatewayProcess, ledger_rows, sim_config
from tests.test_keys import Keys
from tests.test_store import (  # noqa: F401 - `stores` is a fixture
    Stores,
    fresh_postgres_database,
    make_row,
    stores,
)

MESSAGES = [{"role": "user", "content": "hello"}]


def raw_post(
    gateway: GatewayProcess,
    path: str,
    body: bytes,
    headers: list[tuple[bytes, bytes]] = (),
) -> tuple[int, bytes]:
    """A POST with header bytes exactly as given (non-UTF-8, NULs): http.client sends them."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        conn.putheader(b"content-type", b"application/json")
        conn.putheader(b"content-length", str(len(body)).encode())
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _config(ledger: dict[str, Any]) -> dict[str, Any]:
    config = sim_config(
        {"alpha": {"reply": "hi there"}},
        {"chat": {"targets": ["alpha"], "consistency": {"mode": "session"}}},
    )
    config["auth"] = {"required": True}
    config["ledger"] = ledger
    return config


# (headers, body) pairs a hostile client sends; each is one request and must be one row
def hostile_requests(key: str) -> list[tuple[str, list[tuple[bytes, bytes]], bytes]]:
    auth = (b"authorization", f"Bearer {key}".encode())
    chat = json.dumps({"model": "chat", "messages": MESSAGES}).encode()
    return [
        ("/v1/chat/completions", [auth, (b"x-turnout-session", b"sess-\xff\xfe\x80-latin")], chat),
        ("/v1/chat/completions", [auth, (b"x-turnout-session", b"\xc3\x28\xa0\xa1")], chat),
        ("/v1/chat/completions", [auth, (b"x-turnout-session", "caf\u00e9-\u2603".encode())], chat),
        (
            "/v1/chat/completions",
            [auth],
            json.dumps({"model": "chat\u0000nul", "messages": MESSAGES}).encode(),
        ),
        (
            "/v1/chat/completions",
            [auth],
            json.dumps({"model": "chat", "messages": MESSAGES, "user": "u\u0000ser"}).encode(),
        ),
        (
            "/v1/messages",
            # (a NUL inside a header never reaches us: the HTTP parser refuses it with a 400)
            [(b"x-api-key", key.encode()), (b"x-turnout-session", b"\xff\x80\xfe")],
            json.dumps({"model": "chat", "max_tokens": 16, "messages": MESSAGES}).encode(),
        ),
        (
            "/v1/messages",
            [(b"x-api-key", key.encode())],
            json.dumps(
                {"model": "x\u0000\ufffe\U0001f600", "max_tokens": 16, "messages": MESSAGES}
            ).encode(),
        ),
        ("/v1/chat/completions", [auth, (b"x-turnout-session", b"\xed\xa0\x80")], b"{not json"),
    ]


def _check_every_request_has_its_row(gateway_factory, tmp_path: Path, ledger, env, read) -> None:
    config = _config(ledger)
    keys = Keys(tmp_path, config)
    keys.env.update(env)
    key_id, key = keys.create("hostile")
    gateway = gateway_factory(config, env=env)
    requests = hostile_requests(key)
    statuses = [raw_post(gateway, path, body, headers)[0] for path, headers, body in requests]
    assert statuses[:3] == [200, 200, 200], statuses
    # the process keeps serving, and /health shows the ledger writer's counters
    deadline = time.monotonic() + 10
    while (ledger := gateway.get("/health").json()["ledger"])["queued"] and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert ledger["written"] == len(requests), ledger
    assert ledger["dropped"] == 0 and ledger["write_errors"] == 0, ledger
    gateway.stop()
    assert gateway.process.returncode == 0, gateway.log()
    rows = read()
    assert len(rows) == len(requests), (statuses, [(r.route, r.session) for r in rows])
    assert all(r.key_id == key_id for r in rows)
    for row in rows:
        for text in (row.route, row.session or "", row.error or ""):
            assert "\x00" not in text
            text.encode("utf-8")  # valid text: no lone surrogates
    assert "ledger: row" not in gateway.log()  # nothing was dropped


def test_hostile_strings_each_get_one_row_on_sqlite(gateway_factory, tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.db")
    _check_every_request_has_its_row(
        gateway_factory,
        tmp_path,
        {"backend": "sqlite", "path": path},
        {},
        lambda: ledger_rows("sqlite", path),
    )


def test_hostile_strings_each_get_one_row_on_postgres(gateway_factory, tmp_path: Path) -> None:
    async def make() -> tuple[Any, str]:
        manager = fresh_postgres_database()
        return manager, await manager.__aenter__()

    loop = asyncio.new_event_loop()
    manager, dsn = loop.run_until_complete(make())
    try:
        _check_every_request_has_its_row(
            gateway_factory,
            tmp_path,
            {"backend": "postgres", "dsn": "${TURNOUT_LEDGER_DSN}"},
            {"TURNOUT_LEDGER_DSN": dsn},
            lambda: ledger_rows("postgres", dsn),
        )
    finally:
        loop.run_until_complete(manager.__aexit__(None, None, None))
        loop.close()


# -- the store writes a row sanitised rather than drop it ---------------------------------


async def test_rows_the_database_refuses_are_written_sanitised(stores: Stores) -> None:  # noqa: F811
    store = await stores.open()
    good = [make_row(started_at=1000.0 + i) for i in range(60)]
    hostile = [
        make_row(started_at=1100.0, session="sess-\udcff\udcfe"),  # surrogateescape'd bytes
        make_row(started_at=1101.0, route="nul\x00byte", error="bad\x00error"),
        make_row(started_at=1102.0, attempts=[{"model": "m\udc80", "reason": "x\x00y"}]),
    ]
    for row in good[:30] + hostile + good[30:]:
        store.record(row)
    await store.flush()
    written = await store.rows()
    assert len(written) == len(good) + len(hostile)
    by_id = {r.id: r for r in written}
    assert by_id[hostile[0].id].session.startswith("sess-")
    assert by_id[hostile[1].id].route.startswith("nul")
    assert by_id[hostile[2].id].attempts[0]["model"].startswith("m")
    # SQLite stores NULs as they are; PostgreSQL refuses them in text, so that row too is
    # written sanitised there
    refused = len(hostile) if stores.backend == "postgres" else len(hostile) - 1
    if stores.backend == "postgres":
        assert "\x00" not in by_id[hostile[1].id].route
    stats = store.stats()
    assert stats["dropped"] == 0 and stats["sanitised"] == refused
    assert stats["written"] == len(written) and stats["queued"] == 0


async def test_a_row_that_cannot_be_written_even_sanitised_is_counted(
    stores: Stores,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = await stores.open()
    store.record(make_row(prompt_tokens=2**70))  # no text to fix: beyond any integer column
    store.record(make_row())
    await store.flush()
    assert await store.count() == 1
    stats = store.stats()
    assert stats["dropped"] == 1 and stats["write_errors"] >= 1
    assert any(r.levelname == "ERROR" and "dropped" in r.getMessage() for r in caplog.records)


# -- bounds ---------------------------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


def test_client_strings_are_bounded_in_memory_ledger_and_errors(
    gateway_factory, tmp_path: Path
) -> None:
    path = str(tmp_path / "ledger.db")
    config = sim_config(
        {"alpha": {"reply": "hi"}},
        {"chat": {"targets": ["alpha"], "consistency": {"mode": "session"}}},
    )
    config["ledger"] = {"backend": "sqlite", "path": path}
    gateway = gateway_factory(config)

    # a model name of several MB: the 404 names a bounded part of it
    huge_model = "m" * (4 * 1024 * 1024)
    status, body = raw_post(
        gateway,
        "/v1/chat/completions",
        json.dumps({"model": huge_model, "messages": MESSAGES}).encode(),
    )
    assert status == 404 and len(body) < 2048, len(body)
    assert json.loads(body)["error"]["code"] == "model_not_found"

    # the longest session header aiohttp lets through (8190-byte fields)
    long_session = ("s" * 8000).encode()
    status, _ = raw_post(
        gateway,
        "/v1/chat/completions",
        json.dumps({"model": "chat", "messages": MESSAGES}).encode(),
        [(b"x-turnout-session", long_session)],
    )
    assert status == 200

    def ask_as(user: str) -> None:
        payload = {"model": "chat", "messages": MESSAGES, "user": user}
        status, _ = raw_post(gateway, "/v1/chat/completions", json.dumps(payload).encode())
        assert status == 200

    megabyte = 1024 * 1024
    for i in range(20):  # warm-up: buffers and allocator pools reach their working size
        ask_as(f"{i:08d}" + "u" * megabyte)
    before = _rss_kb(gateway.process.pid)
    for i in range(200):  # 200 distinct 1 MB users: 200 MB if each were kept
        ask_as(f"{i + 100:08d}" + "v" * megabyte)
    grown_mb = (_rss_kb(gateway.process.pid) - before) / 1024
    assert grown_mb < 60, f"RSS grew by {grown_mb:.0f} MB over 200 distinct 1 MB users"

    gateway.stop()
    rows = ledger_rows("sqlite", path)
    assert len(rows) == 2 + 20 + 200
    assert max(len(r.route) for r in rows) <= 256
    assert max(len(r.session or "") for r in rows) <= 256
    assert max(len(r.error or "") for r in rows) <= 300
    assert any(r.status == 404 and r.route.startswith("mmmm") for r in rows)
