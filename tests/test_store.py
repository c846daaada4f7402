"""The ledger and key store, on real SQLite files and on the real PostgreSQL of this machine.

Every test gets a fresh database: a new SQLite file under tmp_path, or a new Postgres
database created on the `test` database and dropped afterwards. Postgres being down is a
failure, not a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import re
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.services import postgres_server
from turnout.accounting.records import KeyRecord, LedgerRow
from turnout.accounting.store import DuplicateKeyError, Store, make_store, migrations
from turnout.accounting.store.columns import KEY_COLUMNS, LEDGER_COLUMNS

BACKENDS = ["sqlite", "postgres"]


def make_row(**fields: Any) -> LedgerRow:
    values: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "started_at": time.time(),
        "route": "chat",
        "dialect": "openai",
        "stream": False,
        "status": 200,
        "outcome": "ok",
    }
    values.update(fields)
    return LedgerRow(**values)


@contextlib.asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """A new, empty database; its DSN. Dropped afterwards, connections and all."""
    name = f"turnout_test_{uuid.uuid4().hex[:12]}"
    server = postgres_server()
    admin = await asyncpg.connect(f"{server}/test")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{server}/{name}"
    finally:
        admin = await asyncpg.connect(f"{server}/test")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


class Stores:
    """Stores on one fresh database, and direct SQL on it (written with ? placeholders)."""

    def __init__(self, backend: str, where: str) -> None:
        self.backend = backend
        self.where = where  # the SQLite path or the Postgres DSN
        self.made: list[Store] = []

    def new(self, **options: Any) -> Store:
        store = make_store(self.backend, path=self.where, dsn=self.where, **options)
        self.made.append(store)
        return store

    async def open(self, **options: Any) -> Store:
        store = self.new(**options)
        await store.start()
        return store

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.backend == "sqlite":
            with contextlib.closing(sqlite3.connect(self.where)) as db:
                return [tuple(r) for r in db.execute(sql, params).fetchall()]
        counter = iter(range(1, len(params) + 1))
        sql = re.sub(r"\?", lambda _: f"${next(counter)}", sql)
        con = await asyncpg.connect(self.where)
        try:
            return [tuple(r) for r in await con.fetch(sql, *params)]
        finally:
            await con.close()

    async def script(self, *statements: str) -> None:
        """Statements run as they are, outside any store (to build an older schema)."""
        if self.backend == "sqlite":
            Path(self.where).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(self.where)) as db:
                for statement in statements:
                    db.execute(statement)
                db.commit()
            return
        con = await asyncpg.connect(self.where)
        try:
            for statement in statements:
                await con.execute(statement)
        finally:
            await con.close()

    async def close_all(self) -> None:
        for store in self.made:
            await store.close()


@contextlib.asynccontextmanager
async def fresh_stores(backend: str, tmp_path: Path) -> AsyncIterator[Stores]:
    if backend == "sqlite":
        # a directory that does not exist yet: the store creates it
        stores = Stores(backend, str(tmp_path / "data" / "nested" / "turnout.db"))
        try:
            yield stores
        finally:
            await stores.close_all()
        return
    async with fresh_postgres_database() as dsn:
        stores = Stores(backend, dsn)
        try:
            yield stores
        finally:
            await stores.close_all()


@pytest.fixture(params=BACKENDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    async with fresh_stores(request.param, tmp_path) as made:
        yield made


async def wait_written(store: Store, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while store.pending:
        assert time.monotonic() < deadline, f"{store.pending} rows still pending"
        await asyncio.sleep(0.02)


# -- migrations --------------------------------------------------------------------------


async def table_columns(stores: Stores, table: str) -> list[str]:
    if stores.backend == "sqlite":
        return [r[1] for r in await stores.query(f"PRAGMA table_info({table})")]
    rows = await stores.query(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = ? ORDER BY ordinal_position",
        table,
    )
    return [r[0] for r in rows]


async def ledger_indexes(stores: Stores) -> set[str]:
    if stores.backend == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ledger'"
    else:
        sql = "SELECT indexname FROM pg_indexes WHERE tablename = 'ledger'"
    return {r[0] for r in await stores.query(sql)}


async def test_migrations_apply_once_and_are_recorded(stores: Stores) -> None:
    versions = list(range(1, len(migrations.SQLITE) + 1))
    first = await stores.open()
    assert first.applied_migrations == versions
    recorded = await stores.query("SELECT version, applied_at FROM schema_migrations ORDER BY 1")
    assert [v for v, _ in recorded] == versions
    assert all(abs(at - time.time()) < 60 for _, at in recorded)
    await first.close()

    second = await stores.open()
    assert second.applied_migrations == []
    assert await stores.query("SELECT version, applied_at FROM schema_migrations ORDER BY 1") == (
        recorded
    )
    assert await table_columns(stores, "ledger") == list(LEDGER_COLUMNS)
    assert await table_columns(stores, "gateway_keys") == list(KEY_COLUMNS)
    indexes = await ledger_indexes(stores)
    assert "ledger_started_at" in indexes
    assert not {"ledger_key_id", "ledger_route"} & indexes  # dropped by version 2
    if stores.backend == "sqlite":
        assert (await stores.query("PRAGMA journal_mode"))[0][0] == "wal"


async def test_a_ledger_of_the_first_release_is_upgraded_with_its_rows(stores: Stores) -> None:
    sqlite = stores.backend == "sqlite"
    first = migrations.SQLITE[0] if sqlite else migrations.POSTGRES[0]
    versions = migrations.SQLITE_VERSIONS_TABLE if sqlite else migrations.POSTGRES_VERSIONS_TABLE
    await stores.script(
        versions,
        *first,
        "INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0)",
        "INSERT INTO ledger (id, started_at, route, dialect, stream, status, outcome)"
        f" VALUES ('old', 1, 'chat', 'openai', {'0' if sqlite else 'false'}, 200, 'ok')",
    )
    assert {"ledger_key_id", "ledger_route"} <= await ledger_indexes(stores)

    store = await stores.open()
    assert store.applied_migrations == list(range(2, len(migrations.SQLITE) + 1))
    assert [row.id for row in await store.rows()] == ["old"]
    assert not {"ledger_key_id", "ledger_route"} & await ledger_indexes(stores)


def test_both_backends_have_the_same_migration_versions() -> None:
    assert len(migrations.SQLITE) == len(migrations.POSTGRES) >= 1


async def test_two_stores_started_at_once_both_succeed(stores: Stores) -> None:
    racers = [stores.new() for _ in range(4)]
    await asyncio.gather(*(store.start() for store in racers))
    applied = sorted(v for store in racers for v in store.applied_migrations)
    assert applied == list(range(1, len(migrations.SQLITE) + 1))  # each version exactly once
    rows = [make_row() for _ in racers]
    for store, row in zip(racers, rows, strict=True):
        store.record(row)
    await asyncio.gather(*(store.flush() for store in racers))
    assert {r.id for r in await racers[0].rows()} == {r.id for r in rows}


_START_AT = """
import asyncio, json, sys, time
from turnout.accounting.store import make_store

async def main():
    store = make_store(sys.argv[1], path=sys.argv[2], dsn=sys.argv[2])
    time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # every process starts together
    await store.start()
    print(json.dumps(store.applied_migrations))
    await store.close()

asyncio.run(main())
"""


async def test_processes_started_at_once_migrate_once(stores: Stores) -> None:
    at = time.time() + 1.5  # after every interpreter has imported turnout
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _START_AT, stores.backend, stores.where, str(at),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(6)
    ]  # fmt: skip
    applied: list[int] = []
    for process in processes:
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        applied += json.loads(out)
    assert sorted(applied) == list(range(1, len(migrations.SQLITE) + 1))


# -- the ledger --------------------------------------------------------------------------


async def test_every_field_round_trips_exactly(stores: Stores) -> None:
    store = await stores.open()
    full = LedgerRow(
        id=uuid.uuid4().hex,
        started_at=1718000000.123456789,
        route="chat-\u00e9\u4e2d",
        dialect="anthropic",
        stream=True,
        status=502,
        outcome="stream_failed",
        model="claude-y",
        provider="anthropic-prod",
        attempts=[
            {"model": "gpt-x", "reason": "rate_limited"},
            {"model": "mini", "reason": "timeout", "ms": 1234.5678, "n": 3, "ok": False},
            {"model": 'odd "quoted" \u2603', "reason": None, "nested": {"a": [1, 2.5]}},
        ],
        prompt_tokens=123456789012,
        cached_tokens=1024,
        completion_tokens=77,
        usage_estimated=True,
        cost_usd=0.1 + 0.2,
        provider_cost_usd=1.2345678901234567e-05,
        baseline_cost_usd=3.0000000000000004,
        ttft_ms=123.456789,
        latency_ms=9876.54321,
        key_id="key_abc",
        session="sess-1",
        error="upstream closed the stream after 12 chunks: 'eof'",
    )
    minimal = make_row(started_at=full.started_at + 1)  # None, [], False, 0 defaults
    store.record(full)
    store.record(minimal)
    await store.flush()
    assert await store.rows() == [full, minimal]
    got = await store.rows()
    assert type(got[0].stream) is bool and type(got[1].usage_estimated) is bool
    assert type(got[1].cost_usd) is float and got[1].ttft_ms is None and got[1].attempts == []
    assert await store.count() == 2
    assert await store.rows(since=full.started_at + 0.5) == [minimal]


async def test_close_drains_rows_recorded_by_many_tasks(stores: Stores) -> None:
    store = await stores.open()

    async def client(n: int) -> list[str]:
        ids = []
        for i in range(10):
            row = make_row(route=f"r{n % 7}", latency_ms=float(i))
            store.record(row)
            ids.append(row.id)
            await asyncio.sleep(0)
        return ids

    batches = await asyncio.gather(*(client(n) for n in range(1000)))
    expected = {row_id for ids in batches for row_id in ids}
    assert len(expected) == 10_000
    await store.close()  # no flush(): close drains
    assert store.pending == 0 and store.dropped == 0

    reader = await stores.open()
    assert await reader.count() == 10_000
    ids = [r[0] for r in await stores.query("SELECT id FROM ledger")]
    assert len(ids) == len(set(ids)) == 10_000
    assert set(ids) == expected


async def test_the_same_row_id_twice_is_stored_once(stores: Stores) -> None:
    store = await stores.open()
    row = make_row(cost_usd=1.0)
    store.record(row)
    store.record(make_row(id=row.id, cost_usd=2.0))  # same batch
    await store.flush()
    store.record(make_row(id=row.id, cost_usd=3.0))  # a later batch (a retried write)
    await store.flush()
    assert await store.count() == 1
    assert (await store.rows())[0] == row  # the first one written stays


async def test_record_never_awaits_and_the_writer_keeps_up(stores: Stores) -> None:
    assert not inspect.iscoroutinefunction(Store.record)
    store = await stores.open()
    assert store.record(make_row()) is None
    spent = 0.0
    total = 50_000
    for _ in range(total // 1000 - 1):  # ~100k rows/s of "traffic", 1000 at a time
        rows = [make_row() for _ in range(1000)]
        began = time.perf_counter()
        for row in rows:
            store.record(row)
        spent += time.perf_counter() - began
        await asyncio.sleep(0.01)
    rows = [make_row() for _ in range(999)]
    for row in rows:
        store.record(row)
    assert spent < 1.0, f"record() took {spent:.3f}s for {total} rows"
    await wait_written(store)  # the background writer alone, no flush()
    assert await store.count() == total
    assert store.dropped == 0


async def test_a_full_queue_drops_and_counts(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    # a writer that would not wake for a while: the queue fills
    store = await stores.open(max_queue=100, batch_size=1000, flush_interval=60)
    with caplog.at_level(logging.ERROR, logger="turnout.ledger"):
        for _ in range(150):
            store.record(make_row())
    assert store.dropped == 50
    assert store.pending == 100
    assert len([r for r in caplog.records if "dropping" in r.getMessage()]) == 1
    await store.flush()
    assert await store.count() == 100


async def test_unwritable_rows_are_written_sanitised_and_the_rest_as_they_are(
    stores: Stores,
) -> None:
    store = await stores.open()
    good = [make_row(started_at=1000.0 + i) for i in range(20)]
    bad = [make_row(started_at=2000.0, attempts=[{"model": object()}])]  # not JSON as is
    if stores.backend == "postgres":
        bad.append(make_row(started_at=2001.0, route="nul\x00byte"))  # Postgres refuses NUL
    for row in good[:10] + bad + good[10:]:
        store.record(row)
    await store.flush()
    written = await store.rows()
    assert written[: len(good)] == good
    assert [r.id for r in written[len(good) :]] == [r.id for r in bad]
    assert store.dropped == 0 and store.sanitised == len(bad)
    assert store.pending == 0


async def test_a_value_the_database_refuses_drops_that_row_only(stores: Stores) -> None:
    # more rows than one multi-row INSERT holds, the bad one inside a group: the batch is
    # split until the row is found
    store = await stores.open()
    good = [make_row(started_at=1000.0 + i) for i in range(137)]
    bad = make_row(prompt_tokens=2**70)  # beyond any integer column
    for row in good[:60] + [bad] + good[60:]:
        store.record(row)
    await store.flush()
    assert await store.rows() == good
    assert store.dropped == 1 and store.pending == 0


async def test_failed_writes_are_retried_until_they_succeed(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await stores.open(flush_interval=0.02)
    insert = store._insert
    failures = {"left": 3}

    async def flaky(params: list[tuple[Any, ...]]) -> None:
        if failures["left"]:
            failures["left"] -= 1
            if failures["left"] == 1:
                await insert(params)  # committed, then the connection "broke"
            raise ConnectionResetError("database went away")
        await insert(params)

    monkeypatch.setattr(store, "_insert", flaky)
    rows = [make_row(started_at=2000.0 + i) for i in range(30)]
    for row in rows:
        store.record(row)
    await wait_written(store)
    assert await store.rows() == rows
    assert store.dropped == 0

    failures["left"] = 2  # close() retries too
    more = [make_row(started_at=3000.0 + i) for i in range(5)]
    for row in more:
        store.record(row)
    await store.close()
    assert store.dropped == 0
    reader = await stores.open()
    assert await reader.rows() == rows + more


async def test_close_gives_up_on_a_dead_database_and_counts(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await stores.open(flush_interval=0.02, drain_timeout=0.3)

    async def down(params: list[tuple[Any, ...]]) -> None:
        raise ConnectionRefusedError("database is down")

    monkeypatch.setattr(store, "_insert", down)
    for _ in range(7):
        store.record(make_row())
    await store.close()
    assert store.dropped == 7 and store.pending == 0
    store.record(make_row())  # after close: counted, not queued
    assert store.dropped == 8 and store.pending == 0


async def test_rows_recorded_before_start_are_written(stores: Stores) -> None:
    store = stores.new()
    row = make_row()
    store.record(row)
    await store.start()
    await store.flush()
    assert await store.rows() == [row]


async def test_spend_groups_rows_since(stores: Stores) -> None:
    store = await stores.open()
    since = 10_000.0
    rows = [
        make_row(started_at=since - 1, key_id="a", route="chat", provider="p1", model="m1",
                 cost_usd=100.0),  # too old
        make_row(started_at=since, key_id="a", route="chat", provider="p1", model="m1",
                 cost_usd=0.25),
        make_row(started_at=since + 5, key_id="a", route="code", provider="p2", model="m2",
                 cost_usd=0.5),
        make_row(started_at=since + 6, key_id="b", route="chat", provider="p2", model="m2",
                 cost_usd=0.125),
        make_row(started_at=since + 7, key_id=None, route="", provider=None, model=None,
                 cost_usd=1.0, outcome="error", status=503),
    ]  # fmt: skip
    for row in rows:
        store.record(row)
    await store.flush()
    assert await store.spend(since, "key_id") == {"a": 0.75, "b": 0.125}
    assert await store.spend(since, "route") == {"chat": 0.375, "code": 0.5, "": 1.0}
    assert await store.spend(since, "provider") == {"p1": 0.25, "p2": 0.625}
    assert await store.spend(since, "model") == {"m1": 0.25, "m2": 0.625}
    assert await store.spend(since + 100, "model") == {}
    with pytest.raises(ValueError, match="group must be one of"):
        await store.spend(since, "cost_usd; DROP TABLE ledger")


# -- keys --------------------------------------------------------------------------------


def make_key(name: str, created_at: float, **fields: Any) -> KeyRecord:
    values: dict[str, Any] = {
        "id": f"key_{uuid.uuid4().hex[:12]}",
        "key_hash": uuid.uuid4().hex * 2,
        "prefix": "tk-" + name[:7],
    }
    return KeyRecord(name=name, created_at=created_at, **{**values, **fields})


async def test_keys_create_list_revoke_and_find_by_hash(stores: Stores) -> None:
    store = await stores.open()
    plain = make_key("ci-bot", 1000.5)
    full = make_key(
        "alice",
        2000.25,
        routes=["chat", "code"],
        rpm=60,
        tpm=100_000,
        daily_budget_usd=2.5,
        monthly_budget_usd=50.125,
        on_exceed="downgrade",
        admin=True,
    )
    await store.create_key(full)
    await store.create_key(plain)
    assert await store.list_keys() == [plain, full]  # oldest first
    assert await store.get_key_by_hash(full.key_hash) == full
    assert await store.get_key_by_hash("0" * 64) is None

    with pytest.raises(DuplicateKeyError):
        await store.create_key(make_key("again", 3000.0, id=plain.id))
    with pytest.raises(DuplicateKeyError):
        await store.create_key(make_key("again", 3000.0, key_hash=plain.key_hash))

    before = time.time()
    assert await store.revoke_key(plain.id) is True
    assert await store.revoke_key(plain.id) is False  # already revoked
    assert await store.revoke_key("key_missing") is False
    revoked = await store.get_key_by_hash(plain.key_hash)  # still found: the caller refuses it
    assert revoked is not None and revoked.revoked_at is not None
    assert before - 1 <= revoked.revoked_at <= time.time() + 1
    listed = await store.list_keys()
    assert [k.id for k in listed] == [plain.id, full.id]
    assert listed[1] == full and listed[1].revoked_at is None
    assert type(listed[0].admin) is bool and listed[0].routes is None


# -- construction ------------------------------------------------------------------------


def test_make_store_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="needs a path"):
        make_store("sqlite", path=None, dsn=None)
    with pytest.raises(ValueError, match="needs a dsn"):
        make_store("postgres", path="x.db", dsn=None)
    with pytest.raises(ValueError, match="unknown backend"):
        make_store("mysql", path="x.db", dsn=None)
