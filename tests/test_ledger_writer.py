"""The SQLite ledger writer's cheaper path: parameters that bind fast (None as NaN, booleans
as 0/1) must store exactly what the plain parameters stored, and the writer's own thread
must keep the guarantees (refused rows, exactly once, cancellation, shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_store import make_row
from turnout.accounting.store import make_store, migrations
from turnout.accounting.store.columns import (
    LEDGER_COLUMNS,
    as_sqlite_params,
    ledger_params,
    sanitised_ledger_params,
    sqlite_ledger_params,
)
from turnout.accounting.store.sqlite import SqliteStore, _insert


class Flag(str):
    """A str subclass (sqlite3 binds it through its slow path): stored as the text."""


ROWS = [
    make_row(),  # every nullable column None, both booleans False
    make_row(stream=True, usage_estimated=True, model="m", provider="p", key_id="key_1"),
    make_row(session="s", error="boom", ttft_ms=12.5, provider_cost_usd=0.25, cost_usd=1.5),
    make_row(latency_ms=0, cost_usd=3, baseline_cost_usd=True, ttft_ms=7),  # ints in REAL
    make_row(status=True, prompt_tokens=12.0, cached_tokens=2.75, completion_tokens=False),
    make_row(stream=2, usage_estimated="yes", model=Flag("flagged"), route=Flag("r")),
    make_row(stream=0, usage_estimated="", attempts=[{"model": "a", "reason": None}]),
]


def stored(params: list[tuple[Any, ...]]) -> list[list[tuple[str, Any]]]:
    """(typeof, value) of every column of the rows inserted with `params`, as the store
    inserts them (one multi-row INSERT)."""
    with contextlib.closing(sqlite3.connect(":memory:", isolation_level=None)) as db:
        for migration in migrations.SQLITE:
            for statement in migration:
                db.execute(statement)
        flat = tuple(value for row in params for value in row)
        db.execute(_insert(len(params)), flat)
        typed = ", ".join(f"typeof({c}), {c}" for c in LEDGER_COLUMNS)
        fetched = db.execute(f"SELECT {typed} FROM ledger ORDER BY rowid").fetchall()
    return [list(zip(row[::2], row[1::2], strict=True)) for row in fetched]


def test_sqlite_params_store_what_ledger_params_store() -> None:
    assert stored([sqlite_ledger_params(r) for r in ROWS]) == stored(
        [ledger_params(r) for r in ROWS]
    )


def test_sqlite_params_bind_only_fast_types() -> None:
    for row in ROWS:
        params = sqlite_ledger_params(row)
        assert len(params) == len(LEDGER_COLUMNS)
        # Flag (a str subclass) is the caller's own value, bound as ledger_params binds it
        assert all(isinstance(v, int | float | str) and type(v) is not bool for v in params)


def test_sanitised_sqlite_params_store_what_sanitised_params_store() -> None:
    odd = make_row(route="nul\x00byte", attempts=[{"model": object()}], error="\udcff")
    rows = [*ROWS, odd]
    assert stored([as_sqlite_params(sanitised_ledger_params(r)) for r in rows]) == stored(
        [sanitised_ledger_params(r) for r in rows]
    )


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    made = make_store("sqlite", str(tmp_path / "turnout.db"))
    await made.start()
    yield made
    await made.close()


async def test_none_or_nan_in_a_required_column_is_refused_as_before(store: SqliteStore) -> None:
    # None (and a NaN, which SQLite stores as NULL) in a NOT NULL column: the row is refused,
    # tried again sanitised, refused again and dropped; the others are written
    good = [make_row(started_at=1000.0 + i) for i in range(120)]
    bad = [make_row(route=None), make_row(cost_usd=float("nan")), make_row(stream=None)]
    for row in good[:50] + bad[:2] + good[50:] + bad[2:]:
        store.record(row)
    await store.flush()
    assert await store.rows() == good
    assert store.dropped == len(bad) and store.pending == 0 and store.written == len(good)


async def test_a_cancelled_write_leaves_no_transaction_and_rows_land_once(
    store: SqliteStore,
) -> None:
    rows = [make_row(started_at=1000.0 + i) for i in range(3000)]
    for row in rows:
        store.record(row)
    flushing = asyncio.create_task(store.flush())
    await asyncio.sleep(0.001)
    flushing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flushing
    store.record(extra := make_row(started_at=5000.0))
    await store.flush()
    assert await store.rows() == [*rows, extra]
    assert store.pending == 0 and store.dropped == 0


async def test_the_writer_thread_ends_with_the_store(tmp_path: Path) -> None:
    def writers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("turnout-ledger")]

    before = len(writers())
    store = make_store("sqlite", str(tmp_path / "turnout.db"))
    await store.start()
    store.record(make_row())
    await store.flush()
    assert len(writers()) == before + 1
    await store.close()
    deadline = time.monotonic() + 5
    while len(writers()) > before:
        assert time.monotonic() < deadline, "the ledger writer thread is still running"
        await asyncio.sleep(0.01)
