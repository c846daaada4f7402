"""One database for ledger rows and gateway keys: SQLite (default) or PostgreSQL."""

from __future__ import annotations

from typing import Any

from turnout.accounting.store.base import DuplicateKeyError, Store

__all__ = ["DuplicateKeyError", "Store", "make_store"]


def make_store(
    backend: str, path: str | None = None, dsn: str | None = None, **options: Any
) -> Store:
    """The store for `ledger.backend`: sqlite needs `path`, postgres needs `dsn`.
    Options (batch_size, flush_interval, max_queue, drain_timeout) go to the Store."""
    # imported here: a SQLite deployment never needs asyncpg, nor Postgres aiosqlite
    if backend == "sqlite":
        if not path:
            raise ValueError("ledger: the sqlite backend needs a path")
        from turnout.accounting.store.sqlite import SqliteStore

        return SqliteStore(path, **options)
    if backend == "postgres":
        if not dsn:
            raise ValueError("ledger: the postgres backend needs a dsn")
        from turnout.accounting.store.postgres import PostgresStore

        return PostgresStore(dsn, **options)
    raise ValueError(f"ledger: unknown backend {backend!r} (sqlite or postgres)")
