"""The store in one SQLite file: WAL, synchronous=NORMAL, batched inserts.

Two connections: the writer (migrations and ledger batches, with explicit transactions)
and the reader (queries and key changes, autocommit, through aiosqlite). WAL lets them work
side by side, and keeps reads from another process (`turnout report`) from blocking the
gateway.

The writer is a plain sqlite3 connection owned by one thread of its own, and a ledger batch
is one call to that thread: its transaction (BEGIN, the INSERTs, COMMIT) runs there from
start to end. Through aiosqlite each statement was a round trip to its thread and back to
the event loop, four or five a batch.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from turnout.accounting.records import KeyRecord, LedgerRow
from turnout.accounting.store import migrations
from turnout.accounting.store.base import DuplicateKeyError, Store
from turnout.accounting.store.columns import (
    KEY_COLUMNS,
    LEDGER_COLUMNS,
    as_sqlite_params,
    key_params,
    key_record,
    ledger_row,
    sanitised_ledger_params,
    sqlite_ledger_params,
)

_T = TypeVar("_T")

_BUSY_TIMEOUT = 30.0  # seconds to wait for another connection's write lock
# Rows go in ROWS_PER_INSERT at a time, one multi-row INSERT each: a tenth of the statement
# runs, and of the times sqlite3 hands the GIL back and forth with the serving thread
ROWS_PER_INSERT = 50  # x 23 columns, well under SQLite's 32,766 parameters


@functools.cache
def _insert(rows: int) -> str:
    values = ", ".join([f"({', '.join('?' * len(LEDGER_COLUMNS))})"] * rows)
    return (
        f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) VALUES {values} "
        "ON CONFLICT (id) DO NOTHING"
    )


_INSERT_KEY = (
    f"INSERT INTO gateway_keys ({', '.join(KEY_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(KEY_COLUMNS))})"
)
_FACTS = (
    "SELECT route, model, key_id, outcome, json_array_length(attempts) > 0, cost_usd, "
    "baseline_cost_usd, provider_cost_usd, prompt_tokens, cached_tokens, completion_tokens, "
    "ttft_ms, latency_ms, cache, cache_saved_usd FROM ledger WHERE started_at >= ?"
)
_ROW_ERRORS = (
    sqlite3.InterfaceError,  # a value of a type sqlite3 cannot bind
    sqlite3.IntegrityError,  # NOT NULL
    sqlite3.DataError,
    OverflowError,  # an int beyond 64 bits
    UnicodeError,
    TypeError,
    ValueError,
)


def _connect_sync(path: str) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions, the store opens its own
    db = sqlite3.connect(path, timeout=_BUSY_TIMEOUT, isolation_level=None)
    # with WAL: a crash loses at most the last commits, never the file
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _use_wal(db: sqlite3.Connection) -> None:
    """WAL mode (stored in the file). Switching needs the file to itself, and SQLite
    answers "locked" at once instead of waiting while another process opening the same
    new file holds it (e.g. `serve --workers 2` on a fresh data dir): so retry."""
    deadline = time.monotonic() + _BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)  # in the writer's own thread


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


def _migrate(db: sqlite3.Connection) -> list[int]:
    # BEGIN IMMEDIATE takes the write lock up front: a second process starting at the
    # same moment waits (busy timeout), then finds the version recorded and skips it
    db.execute(migrations.SQLITE_VERSIONS_TABLE)
    applied: list[int] = []
    for version, statements in enumerate(migrations.SQLITE, start=1):
        db.execute("BEGIN IMMEDIATE")
        try:
            done = db.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
            ).fetchall()
            if not done:
                for statement in statements:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )
                applied.append(version)
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
    return applied


def _insert_rows(db: sqlite3.Connection, params: list[tuple[Any, ...]]) -> None:
    """Ledger rows in one transaction, ROWS_PER_INSERT to a statement (the writer thread)."""
    _rollback(db)  # in case a ROLLBACK below failed and left the transaction open
    full = len(params) - len(params) % ROWS_PER_INSERT
    groups = [
        tuple(itertools.chain.from_iterable(params[i : i + ROWS_PER_INSERT]))
        for i in range(0, full, ROWS_PER_INSERT)
    ]
    db.execute("BEGIN IMMEDIATE")
    try:
        if groups:
            db.executemany(_insert(ROWS_PER_INSERT), groups)
        if rest := params[full:]:
            db.execute(_insert(len(rest)), tuple(itertools.chain.from_iterable(rest)))
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise


class SqliteStore(Store):
    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self._writer_thread: ThreadPoolExecutor | None = None
        self._writer_db: sqlite3.Connection | None = None  # used in _writer_thread only
        self._reader_db: aiosqlite.Connection | None = None

    async def _in_writer(self, fn: Callable[..., _T], *args: Any) -> _T:
        """fn(*args) in the writer's thread, calls in the order made. A call that has begun
        runs to its end even if the caller is cancelled: no transaction is left half-way."""
        assert self._writer_thread is not None, "the store is not started"
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, fn, *args)

    async def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="turnout-ledger")
        self._writer_db = await self._in_writer(_connect_sync, self.path)
        await self._in_writer(_use_wal, self._writer_db)
        # isolation_level=None: no implicit transactions, the store opens its own
        self._reader_db = await aiosqlite.connect(
            self.path, timeout=_BUSY_TIMEOUT, isolation_level=None
        )
        await self._reader_db.execute_fetchall("PRAGMA synchronous=NORMAL")

    async def _shutdown(self) -> None:
        if self._reader_db is not None:
            await self._reader_db.close()
        if self._writer_db is not None:
            await self._in_writer(self._writer_db.close)
        if self._writer_thread is not None:
            self._writer_thread.shutdown(wait=False)  # idle now: its thread ends at once
        self._reader_db = self._writer_db = self._writer_thread = None

    @property
    def _w(self) -> sqlite3.Connection:
        assert self._writer_db is not None, "the store is not started"
        return self._writer_db

    @property
    def _r(self) -> aiosqlite.Connection:
        assert self._reader_db is not None, "the store is not started"
        return self._reader_db

    async def _migrate(self) -> list[int]:
        return await self._in_writer(_migrate, self._w)

    async def _insert(self, params: list[tuple[Any, ...]]) -> None:
        await self._in_writer(_insert_rows, self._w, params)

    def _params(self, row: LedgerRow) -> tuple[Any, ...]:
        return sqlite_ledger_params(row)  # no None or bool: they bind slowly (columns.py)

    def _sanitised_params(self, row: LedgerRow) -> tuple[Any, ...]:
        return as_sqlite_params(sanitised_ledger_params(row))

    def _is_row_error(self, exc: Exception) -> bool:
        return isinstance(exc, _ROW_ERRORS)

    async def _fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return list(await self._r.execute_fetchall(sql, params))

    async def _spend(self, since: float, column: str) -> dict[str, float]:
        rows = await self._fetchall(
            f"SELECT {column}, sum(cost_usd) FROM ledger "
            f"WHERE started_at >= ? AND {column} IS NOT NULL GROUP BY {column}",
            (since,),
        )
        return {name: float(total) for name, total in rows}

    async def _facts(self, since: float) -> list[Any]:
        return await self._fetchall(_FACTS, (since,))

    async def count(self) -> int:
        rows = await self._fetchall("SELECT count(*) FROM ledger")
        return int(rows[0][0])

    async def rows(self, since: float = 0) -> list[LedgerRow]:
        fetched = await self._fetchall(
            f"SELECT {', '.join(LEDGER_COLUMNS)} FROM ledger "
            "WHERE started_at >= ? ORDER BY started_at, id",
            (since,),
        )
        return [ledger_row(values) for values in fetched]

    async def create_key(self, record: KeyRecord) -> None:
        try:
            await self._r.execute(_INSERT_KEY, key_params(record))
        except sqlite3.IntegrityError as exc:
            raise DuplicateKeyError(f"key {record.id} exists: {exc}") from exc

    async def list_keys(self) -> list[KeyRecord]:
        fetched = await self._fetchall(
            f"SELECT {', '.join(KEY_COLUMNS)} FROM gateway_keys ORDER BY created_at, id"
        )
        return [key_record(values) for values in fetched]

    async def revoke_key(self, key_id: str) -> bool:
        async with self._r.execute(
            "UPDATE gateway_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (time.time(), key_id),
        ) as cursor:
            return cursor.rowcount > 0

    async def get_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        fetched = await self._fetchall(
            f"SELECT {', '.join(KEY_COLUMNS)} FROM gateway_keys WHERE key_hash = ?",
            (key_hash,),
        )
        return key_record(fetched[0]) if fetched else None
