"""The store interface, and the batching ledger writer every backend shares.

`record()` is the only call on the request path: it appends to an in-memory queue and
returns. A background task writes the queue in batches. A row's id is its primary key and
inserts ignore conflicts, so a batch that failed half-way (or committed and then lost its
connection) is simply written again: rows land exactly once. When the database cannot keep
up, the queue grows to `max_queue` and then new rows are dropped and counted in `dropped`.

A row the database refuses for its values (text that is not valid UTF-8, a NUL byte for
PostgreSQL) is found by splitting the batch, then written again with every text value forced
to safe text (`sanitised`); only a row that fails even then is dropped, with an ERROR line.
`stats()` gives the counters an operator sees on /health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from typing import Any, Self

from turnout.accounting.records import KeyRecord, LedgerRow
from turnout.accounting.store.columns import ledger_params, sanitised_ledger_params
from turnout.accounting.store.summary import summarize

log = logging.getLogger("turnout.ledger")

SPEND_GROUPS = frozenset({"key_id", "route", "provider", "model"})
_MAX_BACKOFF = 10.0  # seconds between write retries while the database is failing


class DuplicateKeyError(ValueError):
    """A gateway key with this id or hash already exists."""


class Store(ABC):
    """One database holding ledger rows and gateway keys."""

    def __init__(
        self,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        max_queue: int = 1_000_000,
        drain_timeout: float = 30.0,
    ) -> None:
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.drain_timeout = drain_timeout  # close() gives up after this long without progress
        self.dropped = 0  # rows lost: queue full, unwritable values, or a dead database at close
        self.written = 0  # rows handed to the database in a committed insert
        self.sanitised = 0  # rows written only once their text was forced to safe text
        self.write_errors = 0  # failed inserts: the database down, or a row's values refused
        self.applied_migrations: list[int] = []  # versions the last start() applied
        self._queue: deque[LedgerRow] = deque()
        self._inflight = 0
        self._wake = asyncio.Event()  # a full batch is waiting
        self._stop = asyncio.Event()
        self._write_lock = asyncio.Lock()  # the writer task and flush() callers take turns
        self._writer: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._overflow_logged = False
        self._last_write = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, apply pending migrations, start the background writer."""
        if self._started:
            return
        try:
            await self._open()
            self.applied_migrations = await self._migrate()
        except BaseException:
            await self._shutdown()
            raise
        self._started = True
        self._writer = asyncio.create_task(self._write_loop(), name=f"{type(self).__name__}-writer")

    async def close(self) -> None:
        """Write every queued row (retrying while the database answers), then disconnect."""
        if self._closed:
            return
        self._stop.set()
        self._wake.set()  # cut the writer's wait short
        if self._writer is not None:
            await self._writer  # it finishes the batch in hand; never cancel a write mid-way
        if self._started:
            await self._drain()
        elif self._queue:
            self._drop_all("the store was never started")
        self._closed = True
        if self._started:
            await self._shutdown()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the ledger writer -------------------------------------------------------------

    def record(self, row: LedgerRow) -> None:
        """Queue one ledger row. Never blocks: a full queue drops the row and counts it."""
        if self._closed or len(self._queue) >= self.max_queue:
            self.dropped += 1
            if not self._overflow_logged:
                self._overflow_logged = True
                reason = "the store is closed" if self._closed else f"{self.max_queue} rows queued"
                log.error("ledger: dropping rows (%s); dropped rows are counted", reason)
            return
        self._queue.append(row)
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Rows recorded but not yet written (queued or in the batch being written)."""
        return len(self._queue) + self._inflight

    def stats(self) -> dict[str, int]:
        """The writer's counters, for /health: nothing is lost silently."""
        return {
            "queued": self.pending,
            "written": self.written,
            "sanitised": self.sanitised,
            "dropped": self.dropped,
            "write_errors": self.write_errors,
        }

    async def flush(self) -> None:
        """Write every row queued at the time of the call. Raises if the database fails
        (the rows stay queued)."""
        if not self._started:
            raise RuntimeError("the store is not started")
        async with self._write_lock:
            remaining = len(self._queue)
            while remaining > 0 and self._queue:
                size = min(self.batch_size, remaining, len(self._queue))
                batch = [self._queue.popleft() for _ in range(size)]
                remaining -= size
                await self._write_batch(batch)
            if not self._queue:
                self._overflow_logged = False

    async def _write_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if failures:  # back off, but a full batch does not cut the wait short
                delay = min(self.flush_interval * 2**failures, _MAX_BACKOFF)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
            elif len(self._queue) < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            if self._stop.is_set():
                return  # close() drains what is left
            if not self._queue:
                continue
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - the rows are queued again; retry later
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "ledger: write failed (%d in a row, %d rows queued): %s",
                        failures,
                        self.pending,
                        exc,
                    )
            else:
                if failures:
                    log.info("ledger: writing again after %d failed attempts", failures)
                failures = 0

    async def _write_batch(self, batch: list[LedgerRow]) -> None:
        self._inflight = len(batch)
        bad: set[int] = set()  # id() of rows dropped as unwritable
        try:
            rows, params, unencodable = self._encode(batch)
            if rows:
                await self._insert_or_split(rows, params, bad)
            for row, error in unencodable:
                await self._insert_sanitised(row, error, bad)
            self._last_write = time.monotonic()
        except BaseException:
            # transient failure (or cancellation): everything not known bad goes back in front,
            # in order; rows that did commit are ignored on the retry (ON CONFLICT DO NOTHING)
            self._queue.extendleft(reversed([r for r in batch if id(r) not in bad]))
            raise
        finally:
            self._inflight = 0

    def _encode(
        self, batch: list[LedgerRow]
    ) -> tuple[list[LedgerRow], list[tuple[Any, ...]], list[tuple[LedgerRow, Exception]]]:
        """The rows that encode, their parameters, and the rows that do not (with why)."""
        params = self._params
        with contextlib.suppress(Exception):  # the usual case: every row encodes
            return batch, [params(row) for row in batch], []
        # one bad row must not stop the rest: encode them one by one
        rows, encoded, unencodable = [], [], []
        for row in batch:
            try:
                encoded.append(params(row))
            except Exception as exc:  # noqa: BLE001
                unencodable.append((row, exc))
            else:
                rows.append(row)
        return rows, encoded, unencodable

    async def _insert_or_split(
        self, rows: list[LedgerRow], params: list[tuple[Any, ...]], bad: set[int]
    ) -> None:
        """Insert; when the database rejects a value, halve the batch until the bad rows
        are found, write each of them sanitised, and the rest as they are."""
        try:
            await self._insert(params)
        except Exception as exc:
            self.write_errors += 1
            if not self._is_row_error(exc):
                raise
            if len(rows) == 1:
                await self._insert_sanitised(rows[0], exc, bad)
                return
            middle = len(rows) // 2
            await self._insert_or_split(rows[:middle], params[:middle], bad)
            await self._insert_or_split(rows[middle:], params[middle:], bad)
        else:
            self.written += len(rows)

    async def _insert_sanitised(self, row: LedgerRow, first: BaseException, bad: set[int]) -> None:
        """One refused row, every text value forced to safe text: written, or (when even
        that fails, e.g. a number beyond the column) dropped with an ERROR and counted."""
        try:
            await self._insert([self._sanitised_params(row)])
        except Exception as exc:
            if not self._is_row_error(exc):
                raise  # the database went away meanwhile: the batch is retried
            self.write_errors += 1
            bad.add(id(row))
            self.dropped += 1
            log.error(
                "ledger: row %s cannot be stored even sanitised, dropped: %r (first: %r)",
                row.id,
                exc,
                first,
            )
            return
        self.written += 1
        self.sanitised += 1
        log.warning("ledger: row %s was written with its text sanitised (%r)", row.id, first)

    async def _drain(self) -> None:
        began = time.monotonic()
        failures = 0
        while self._queue:
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - retried until drain_timeout
                failures += 1
                if time.monotonic() - max(self._last_write, began) > self.drain_timeout:
                    self._drop_all(f"the database failed for {self.drain_timeout:.0f}s: {exc}")
                    return
                await asyncio.sleep(min(self.flush_interval * 2**failures, _MAX_BACKOFF))

    def _drop_all(self, reason: str) -> None:
        lost = len(self._queue)
        self._queue.clear()
        self.dropped += lost
        log.error("ledger: %d queued rows were not written (%s)", lost, reason)

    # -- reading -----------------------------------------------------------------------

    async def spend(self, since: float, group: str) -> dict[str, float]:
        """Sum of cost_usd of rows started at or after `since`, by key_id, route, provider
        or model. Rows where that column is NULL are left out; queued rows are not counted."""
        if group not in SPEND_GROUPS:
            raise ValueError(f"group must be one of {sorted(SPEND_GROUPS)}, not {group!r}")
        return await self._spend(since, group)

    async def report(self, since: float) -> dict[str, Any]:
        """The report figures for rows started at or after `since` (see summary.py)."""
        return summarize(await self._facts(since), since)

    # -- what a backend provides -------------------------------------------------------

    def _params(self, row: LedgerRow) -> tuple[Any, ...]:
        """The row as this backend's bind parameters. Raises on unencodable values."""
        return ledger_params(row)

    def _sanitised_params(self, row: LedgerRow) -> tuple[Any, ...]:
        """The parameters of a refused row, every text value forced to safe text."""
        return sanitised_ledger_params(row)

    @abstractmethod
    async def _open(self) -> None:
        """Connect."""

    @abstractmethod
    async def _migrate(self) -> list[int]:
        """Apply pending migrations, safely against other processes; the versions applied."""

    @abstractmethod
    async def _shutdown(self) -> None:
        """Disconnect."""

    @abstractmethod
    async def _insert(self, params: list[tuple[Any, ...]]) -> None:
        """Insert ledger rows (LEDGER_COLUMNS order) in one transaction, ignoring known ids."""

    @abstractmethod
    def _is_row_error(self, exc: Exception) -> bool:
        """True when `exc` means a value was refused (bad data), not that the database
        is unavailable: such rows are dropped instead of retried forever."""

    @abstractmethod
    async def _spend(self, since: float, column: str) -> dict[str, float]: ...

    @abstractmethod
    async def _facts(self, since: float) -> Sequence[Sequence[Any]]:
        """summary.FACT_COLUMNS of every row started at or after `since`."""

    @abstractmethod
    async def count(self) -> int:
        """Ledger rows written."""

    @abstractmethod
    async def rows(self, since: float = 0) -> list[LedgerRow]:
        """Written ledger rows started at or after `since`, oldest first (for tests)."""

    @abstractmethod
    async def create_key(self, record: KeyRecord) -> None:
        """Store a new key. Raises DuplicateKeyError if its id or hash exists."""

    @abstractmethod
    async def list_keys(self) -> list[KeyRecord]:
        """Every key, revoked ones included, oldest first."""

    @abstractmethod
    async def revoke_key(self, key_id: str) -> bool:
        """Revoke a key now. False if there is no such key or it was already revoked."""

    @abstractmethod
    async def get_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        """The key with this hash, revoked or not (the caller checks revoked_at)."""
