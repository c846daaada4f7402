"""LedgerRow and KeyRecord to database parameters and back: one column per field.

Both backends bind the same tuples. JSON fields travel as text (orjson); booleans go in
as bool and come back as bool (SQLite returns 0/1, hence the bool() on the way out).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import orjson

from turnout.accounting.records import ERROR_LIMIT, KeyRecord, LedgerRow, safe_text

LEDGER_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(LedgerRow))
KEY_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(KeyRecord))

_LEDGER_FLOATS = frozenset(
    {"started_at", "cost_usd", "provider_cost_usd", "baseline_cost_usd", "ttft_ms", "latency_ms"}
    | {"cache_saved_usd", "cache_similarity"}
)
_LEDGER_INTS = frozenset({"status", "prompt_tokens", "cached_tokens", "completion_tokens"})
_LEDGER_BOOLS = frozenset({"stream", "usage_estimated"})
_ATTEMPTS = LEDGER_COLUMNS.index("attempts")
_KEY_ROUTES = KEY_COLUMNS.index("routes")
_KEY_ADMIN = KEY_COLUMNS.index("admin")


_LEDGER_VALUES = operator.attrgetter(*LEDGER_COLUMNS)
# (index, type) of the columns whose Python value may need coercing
_LEDGER_TYPED = tuple(
    (i, float if name in _LEDGER_FLOATS else int if name in _LEDGER_INTS else bool)
    for i, name in enumerate(LEDGER_COLUMNS)
    if name in _LEDGER_FLOATS | _LEDGER_INTS | _LEDGER_BOOLS
)


def ledger_params(row: LedgerRow) -> tuple[Any, ...]:
    """The row as bind parameters, in LEDGER_COLUMNS order. Raises on unencodable values.
    (Runs for every request at full load: one attrgetter call, then only what needs it.)"""
    values = list(_LEDGER_VALUES(row))
    for i, kind in _LEDGER_TYPED:
        value = values[i]
        # an int where a float belongs (latency_ms=0) must not fail a batch on Postgres
        if value is not None and type(value) is not kind:
            values[i] = kind(value)
    values[_ATTEMPTS] = orjson.dumps(row.attempts).decode()
    return tuple(values)


def sanitised_ledger_params(row: LedgerRow) -> tuple[Any, ...]:
    """ledger_params for a row the database refused: every text value (attempts' JSON
    included, whatever it holds) forced to bounded, NUL-free, valid UTF-8 text."""
    values = list(_LEDGER_VALUES(row))
    for i, value in enumerate(values):
        if isinstance(value, str):
            values[i] = safe_text(value, ERROR_LIMIT)
    for i, kind in _LEDGER_TYPED:
        if values[i] is not None and type(values[i]) is not kind:
            values[i] = kind(values[i])
    values[_ATTEMPTS] = orjson.dumps(_safe_json(row.attempts), default=_safe_str).decode()
    return tuple(values)


# SQLite binds int, float and str through a fast path; any other value (None, a bool) goes
# through sqlite3's adapter lookup, which builds and discards an AttributeError message each
# time: about 0.9 us a value, 7 values in a typical row, more than half of a row's insert.
# A NaN binds as NULL (SQLite has no NaN: sqlite3_bind_double stores NULL for it), and a
# boolean column holds 0/1 in SQLite anyway: the stored row is the same.
_NAN = float("nan")
_SQLITE_BOOLS = frozenset(i for i, kind in _LEDGER_TYPED if kind is bool)


def _real(value: Any) -> float:
    return _NAN if value is None else float(value)


def _integer(value: Any) -> Any:
    return _NAN if value is None else int(value)


def sqlite_ledger_params(row: LedgerRow) -> tuple[Any, ...]:
    """ledger_params as SQLite binds them cheapest: None as NaN, booleans as 0/1 (see
    above); the database stores exactly what ledger_params would have stored. Written out
    column by column, since it runs for every request: half the time of a loop over the
    columns (tests/test_ledger_writer.py checks it against ledger_params)."""
    v: Any  # each column's value in turn
    return (
        row.id,
        v if type(v := row.started_at) is float else _real(v),
        row.route,
        row.dialect,
        _NAN if (v := row.stream) is None else 1 if v else 0,
        v if type(v := row.status) is int else _integer(v),
        row.outcome,
        _NAN if (v := row.model) is None else v,
        _NAN if (v := row.provider) is None else v,
        orjson.dumps(row.attempts).decode(),
        v if type(v := row.prompt_tokens) is int else _integer(v),
        v if type(v := row.cached_tokens) is int else _integer(v),
        v if type(v := row.completion_tokens) is int else _integer(v),
        _NAN if (v := row.usage_estimated) is None else 1 if v else 0,
        v if type(v := row.cost_usd) is float else _real(v),
        v if type(v := row.provider_cost_usd) is float else _real(v),
        v if type(v := row.baseline_cost_usd) is float else _real(v),
        v if type(v := row.ttft_ms) is float else _real(v),
        v if type(v := row.latency_ms) is float else _real(v),
        _NAN if (v := row.key_id) is None else v,
        _NAN if (v := row.session) is None else v,
        _NAN if (v := row.error) is None else v,
        _NAN if (v := row.output_check) is None else v,
        _NAN if (v := row.cache) is None else v,
        v if type(v := row.cache_saved_usd) is float else _real(v),
        v if type(v := row.cache_similarity) is float else _real(v),
    )


def as_sqlite_params(params: tuple[Any, ...]) -> tuple[Any, ...]:
    """ledger_params (or the sanitised ones) turned into sqlite_ledger_params' form."""
    return tuple(
        _NAN if value is None else int(value) if i in _SQLITE_BOOLS else value
        for i, value in enumerate(params)
    )


def _safe_str(value: Any) -> str:
    return safe_text(str(value), ERROR_LIMIT)


def _safe_json(value: Any) -> Any:
    """`value` with every string (keys too) made safe; anything not JSON becomes its str."""
    if isinstance(value, str):
        return _safe_str(value)
    if isinstance(value, dict):
        return {_safe_str(k): _safe_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe_json(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _safe_str(value)


def ledger_row(values: Sequence[Any]) -> LedgerRow:
    """A fetched row (LEDGER_COLUMNS order, attempts as JSON text) as a LedgerRow."""
    data = dict(zip(LEDGER_COLUMNS, values, strict=True))
    data["attempts"] = orjson.loads(data["attempts"])
    for name in _LEDGER_BOOLS:
        data[name] = bool(data[name])
    return LedgerRow(**data)


def key_params(record: KeyRecord) -> tuple[Any, ...]:
    values = [getattr(record, name) for name in KEY_COLUMNS]
    if record.routes is not None:
        values[_KEY_ROUTES] = orjson.dumps(list(record.routes)).decode()
    values[_KEY_ADMIN] = bool(record.admin)
    return tuple(values)


def key_record(values: Sequence[Any]) -> KeyRecord:
    data = dict(zip(KEY_COLUMNS, values, strict=True))
    if data["routes"] is not None:
        data["routes"] = orjson.loads(data["routes"])
    data["admin"] = bool(data["admin"])
    return KeyRecord(**data)
