"""The store in one SQLite file (aiosqlite): WAL, synchronous=NORMAL, batched inserts.

Two connections: the writer (migrations and ledger batches, with explicit transactions)
and the reader (queries and key changes, autocommit). WAL lets them work side by side,
and keeps reads from another process (`turnout report`) from blocking the gateway.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiosqlite

from turnout.accounting.records import KeyRecord, LedgerRow
from turnout.accounting.store import migrations
from turnout.accounting.store.base import DuplicateKeyError, Store
from turnout.accounting.store.columns import (
    KEY_COLUMNS,
    LEDGER_COLUMNS,
    key_params,
    key_record,
    ledger_row,
)

_BUSY_TIMEOUT = 30.0  # seconds to wait for another connection's write lock
# Rows go in ROWS_PER_INSERT at a time, one multi-row INSERT each: a tenth of the statement
# runs, and of the times sqlite3 hands the GIL back and forth with the serving thread
ROWS_PER_INSERT = 50  # x 22 columns, well under SQLite's 32,766 parameters


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
    "ttft_ms, latency_ms FROM ledger WHERE started_at >= ?"
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


class SqliteStore(Store):
    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self._writer_db: aiosqlite.Connection | None = None
        self._reader_db: aiosqlite.Connection | None = None

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: no implicit transactions, the store opens its own
        db = await aiosqlite.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None)
        # with WAL: a crash loses at most the last commits, never the file
        await db.execute_fetchall("PRAGMA synchronous=NORMAL")
        return db

    async def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._writer_db = await self._connect()
        await self._use_wal(self._writer_db)
        self._reader_db = await self._connect()

    async def _use_wal(self, db: aiosqlite.Connection) -> None:
        """WAL mode (stored in the file). Switching needs the file to itself, and SQLite
        answers "locked" at once instead of waiting while another process opening the same
        new file holds it (e.g. `serve --workers 2` on a fresh data dir): so retry."""
        deadline = time.monotonic() + _BUSY_TIMEOUT
        while True:
            try:
                await db.execute_fetchall("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.01)

    async def _shutdown(self) -> None:
        for db in (self._reader_db, self._writer_db):
            if db is not None:
                await db.close()
        self._reader_db = self._writer_db = None

    @property
    def _w(self) -> aiosqlite.Connection:
        assert self._writer_db is not None, "the store is not started"
        return self._writer_db

    @property
    def _r(self) -> aiosqlite.Connection:
        assert self._reader_db is not None, "the store is not started"
        return self._reader_db

    async def _migrate(self) -> list[int]:
        # BEGIN IMMEDIATE takes the write lock up front: a second process starting at the
        # same moment waits (busy timeout), then finds the version recorded and skips it
        db = self._w
        await db.execute(migrations.SQLITE_VERSIONS_TABLE)
        applied: list[int] = []
        for version, statements in enumerate(migrations.SQLITE, start=1):
            await db.execute("BEGIN IMMEDIATE")
            try:
                done = await db.execute_fetchall(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (version,)
                )
                if not done:
                    for statement in statements:
                        await db.execute(statement)
                    await db.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                        (version, time.time()),
                    )
                    applied.append(version)
                await db.execute("COMMIT")
            except BaseException:
                await self._rollback(db)
                raise
        return applied

    async def _rollback(self, db: aiosqlite.Connection) -> None:
        if db.in_transaction:
            await db.execute("ROLLBACK")

    async def _insert(self, params: list[tuple[Any, ...]]) -> None:
        db = self._w
        await self._rollback(db)  # a cancelled write can leave a transaction open
        full = len(params) - len(params) % ROWS_PER_INSERT
        groups = [
            tuple(itertools.chain.from_iterable(params[i : i + ROWS_PER_INSERT]))
            for i in range(0, full, ROWS_PER_INSERT)
        ]
        await db.execute("BEGIN IMMEDIATE")
        try:
            if groups:
                await db.executemany(_insert(ROWS_PER_INSERT), groups)
            if rest := params[full:]:
                await db.execute(_insert(len(rest)), tuple(itertools.chain.from_iterable(rest)))
            await db.execute("COMMIT")
        except BaseException:
            await self._rollback(db)
            raise

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
