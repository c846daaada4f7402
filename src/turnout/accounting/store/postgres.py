"""The store in PostgreSQL (asyncpg, a small pool).

A ledger batch is one INSERT ... SELECT FROM unnest(<one array per column>): a single
round trip and a single statement whatever the batch size, with ON CONFLICT DO NOTHING
(which COPY cannot do) so a retried batch never writes a row twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

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

# pg_advisory_lock key for migrations ("turnout" in ASCII); advisory locks are per database
MIGRATION_LOCK = 0x7475726E6F7574

_ARRAY_TYPES = {
    "started_at": "float8",
    "stream": "bool",
    "status": "int4",
    "prompt_tokens": "int8",
    "cached_tokens": "int8",
    "completion_tokens": "int8",
    "usage_estimated": "bool",
    "cost_usd": "float8",
    "provider_cost_usd": "float8",
    "baseline_cost_usd": "float8",
    "ttft_ms": "float8",
    "latency_ms": "float8",
    "cache_saved_usd": "float8",
    "cache_similarity": "float8",
}  # every other column: text (attempts too, cast to jsonb in the SELECT)

_INSERT = (
    f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) "
    f"SELECT {', '.join('u.attempts::jsonb' if c == 'attempts' else 'u.' + c for c in LEDGER_COLUMNS)} "
    "FROM unnest("
    + ", ".join(f"${i}::{_ARRAY_TYPES.get(c, 'text')}[]" for i, c in enumerate(LEDGER_COLUMNS, 1))
    + f") AS u ({', '.join(LEDGER_COLUMNS)}) ON CONFLICT (id) DO NOTHING"
)
_SELECT_ROWS = ", ".join("attempts::text" if c == "attempts" else c for c in LEDGER_COLUMNS)
_SELECT_KEYS = ", ".join("routes::text" if c == "routes" else c for c in KEY_COLUMNS)
_INSERT_KEY = (
    f"INSERT INTO gateway_keys ({', '.join(KEY_COLUMNS)}) VALUES ("
    + ", ".join(f"${i}::jsonb" if c == "routes" else f"${i}" for i, c in enumerate(KEY_COLUMNS, 1))
    + ")"
)
_FACTS = (
    "SELECT route, model, key_id, outcome, jsonb_array_length(attempts) > 0, cost_usd, "
    "baseline_cost_usd, provider_cost_usd, prompt_tokens, cached_tokens, completion_tokens, "
    "ttft_ms, latency_ms, cache, cache_saved_usd FROM ledger WHERE started_at >= $1"
)
_ROW_ERRORS = (
    asyncpg.exceptions.DataError,  # class 22 from the server, or a value asyncpg cannot encode
    asyncpg.exceptions.IntegrityConstraintViolationError,  # NOT NULL
    OverflowError,
    UnicodeError,
    TypeError,
    ValueError,
)


class PostgresStore(Store):
    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 4, **options: Any) -> None:
        super().__init__(**options)
        self.dsn = dsn
        self._pool_size = (min_size, max_size)
        self._pool: asyncpg.Pool | None = None

    @property
    def _p(self) -> asyncpg.Pool:
        assert self._pool is not None, "the store is not started"
        return self._pool

    async def _open(self) -> None:
        min_size, max_size = self._pool_size
        # command_timeout: a hung server becomes a failed (retried) batch, not a stuck writer
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=min_size, max_size=max_size, command_timeout=60
        )

    async def _shutdown(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        try:
            await asyncio.wait_for(pool.close(), 10)
        except TimeoutError:
            pool.terminate()

    async def _migrate(self) -> list[int]:
        applied: list[int] = []
        async with self._p.acquire() as con:
            # a session lock: a second process starting now waits here, then finds every
            # version recorded; the lock goes with the connection if this one dies
            await con.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await con.execute(migrations.POSTGRES_VERSIONS_TABLE)
                done = {r[0] for r in await con.fetch("SELECT version FROM schema_migrations")}
                for version, statements in enumerate(migrations.POSTGRES, start=1):
                    if version in done:
                        continue
                    async with con.transaction():
                        for statement in statements:
                            await con.execute(statement)
                        await con.execute(
                            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                            version,
                            time.time(),
                        )
                    applied.append(version)
            finally:
                await con.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        return applied

    async def _insert(self, params: list[tuple[Any, ...]]) -> None:
        columns = [list(column) for column in zip(*params, strict=True)]
        await self._p.execute(_INSERT, *columns)

    def _is_row_error(self, exc: Exception) -> bool:
        return isinstance(exc, _ROW_ERRORS)

    async def _spend(self, since: float, column: str) -> dict[str, float]:
        rows = await self._p.fetch(
            f"SELECT {column}, sum(cost_usd) FROM ledger "
            f"WHERE started_at >= $1 AND {column} IS NOT NULL GROUP BY {column}",
            since,
        )
        return {name: float(total) for name, total in rows}

    async def _facts(self, since: float) -> list[Any]:
        return await self._p.fetch(_FACTS, since)

    async def count(self) -> int:
        return int(await self._p.fetchval("SELECT count(*) FROM ledger"))

    async def rows(self, since: float = 0) -> list[LedgerRow]:
        fetched = await self._p.fetch(
            f"SELECT {_SELECT_ROWS} FROM ledger WHERE started_at >= $1 ORDER BY started_at, id",
            since,
        )
        return [ledger_row(values) for values in fetched]

    async def create_key(self, record: KeyRecord) -> None:
        try:
            await self._p.execute(_INSERT_KEY, *key_params(record))
        except asyncpg.exceptions.UniqueViolationError as exc:
            raise DuplicateKeyError(f"key {record.id} exists: {exc}") from exc

    async def list_keys(self) -> list[KeyRecord]:
        fetched = await self._p.fetch(
            f"SELECT {_SELECT_KEYS} FROM gateway_keys ORDER BY created_at, id"
        )
        return [key_record(values) for values in fetched]

    async def revoke_key(self, key_id: str) -> bool:
        status = await self._p.execute(
            "UPDATE gateway_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            time.time(),
            key_id,
        )
        return status != "UPDATE 0"

    async def get_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        values = await self._p.fetchrow(
            f"SELECT {_SELECT_KEYS} FROM gateway_keys WHERE key_hash = $1",
            key_hash,
        )
        return key_record(values) if values is not None else None
