"""`turnout report` figures, checked against SQL run directly on the same ledger (SQLite and
PostgreSQL), and the three renderers."""

from __future__ import annotations

import csv
import io
import random
import statistics
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from tests.test_store import BACKENDS, Stores, fresh_stores, make_key, make_row
from turnout.accounting.records import LedgerRow
from turnout.accounting.report import (
    CSV_COLUMNS,
    build_report,
    parse_since,
    render_csv,
    render_json,
    render_table,
)
from turnout.accounting.store import Store

SINCE = 1_700_000_000.0
DIMENSIONS = {"routes": "route", "models": "model", "keys": "key_id"}


@pytest.fixture(params=BACKENDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    async with fresh_stores(request.param, tmp_path) as made:
        yield made


def known_ledger(seed: int = 7, size: int = 400) -> list[LedgerRow]:
    """Several routes, models and keys; all outcomes; some rows older than SINCE."""
    rng = random.Random(seed)
    rows = []
    for i in range(size):
        outcome = rng.choices(
            ["ok", "error", "stream_failed", "stale", "client_closed"], [70, 12, 6, 6, 6]
        )[0]
        cost = 0.0 if rng.random() < 0.1 else rng.uniform(0, 0.02)
        attempts = [
            {"model": rng.choice(["gpt-x", "mini"]), "reason": rng.choice(["timeout", "rate_limited", "breaker_open"])}
            for _ in range(rng.choice([0, 0, 0, 1, 2]))
        ]  # fmt: skip
        old = rng.random() < 0.2
        rows.append(
            make_row(
                id=f"row{i:04d}",
                started_at=SINCE - rng.uniform(0.001, 86400) if old else SINCE + rng.uniform(0, 86400),
                route=rng.choice(["chat", "code", ""]),
                stream=rng.random() < 0.6,
                status=200 if outcome in ("ok", "stale") else 502,
                outcome=outcome,
                model=rng.choice(["gpt-x", "claude-y", "mini", None]),
                provider=rng.choice(["openai", "anthropic", None]),
                attempts=attempts,
                prompt_tokens=rng.randint(0, 20_000),
                cached_tokens=rng.randint(0, 500),
                completion_tokens=rng.randint(0, 4000),
                cost_usd=cost,
                baseline_cost_usd=cost * rng.uniform(0.5, 3.0),
                provider_cost_usd=rng.uniform(0, 0.02) if rng.random() < 0.3 else None,
                ttft_ms=rng.uniform(30, 3000) if rng.random() < 0.6 else None,
                latency_ms=rng.uniform(50, 20_000),
                key_id=rng.choice(["key_a", "key_b", "key_gone", None]),
            )
        )  # fmt: skip
    rows.append(make_row(id="at_since", started_at=SINCE, cost_usd=0.125, key_id="key_a"))
    rows.append(make_row(id="just_before", started_at=SINCE - 1e-6, cost_usd=7.0))
    return rows


async def write(store: Store, rows: list[LedgerRow]) -> None:
    for row in rows:
        store.record(row)
    await store.flush()


# -- the figures, against SQL ------------------------------------------------------------

_SUMS = """
SELECT {name}, count(*),
  sum(CASE WHEN outcome = 'ok' THEN 1 ELSE 0 END),
  sum(CASE WHEN outcome IN ('error', 'stream_failed') THEN 1 ELSE 0 END),
  sum(CASE WHEN outcome = 'stale' THEN 1 ELSE 0 END),
  sum(CASE WHEN outcome = 'client_closed' THEN 1 ELSE 0 END),
  sum(CASE WHEN outcome = 'ok' AND attempts <> {empty} THEN 1 ELSE 0 END),
  sum(cost_usd), sum(baseline_cost_usd), sum(provider_cost_usd), count(provider_cost_usd),
  sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens)
FROM ledger WHERE started_at >= ? {group_by}
"""
_SUM_FIGURES = (
    "requests", "ok", "errors", "stale", "client_closed", "fallbacks", "spend_usd",
    "baseline_usd", "provider_cost_usd", "provider_cost_requests", "prompt_tokens",
    "cached_tokens", "completion_tokens",
)  # fmt: skip
_PERCENTILES_PG = """
SELECT {name},
  percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_ms),
  percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms),
  percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
  percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
FROM ledger WHERE started_at >= ? {group_by}
"""
_PERCENTILE_FIGURES = ("ttft_p50_ms", "ttft_p95_ms", "latency_p50_ms", "latency_p95_ms")


def _number(value: Any) -> Any:
    return None if value is None else (float(value) if isinstance(value, float) else int(value))


def _inclusive(values: list[float], q: int) -> float | None:
    """An independent percentile: statistics' inclusive (linear) quantiles."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def expected_figures(stores: Stores, column: str | None) -> dict[Any, dict[str, Any]]:
    """Figures per value of `column` (or the totals, under the key "total"), from SQL."""
    name = column or "'total'"
    group_by = f"GROUP BY {column}" if column else ""
    empty = "'[]'" if stores.backend == "sqlite" else "'[]'::jsonb"
    expected: dict[Any, dict[str, Any]] = {}
    for row in await stores.query(_SUMS.format(name=name, empty=empty, group_by=group_by), SINCE):
        figures = dict(zip(_SUM_FIGURES, row[1:], strict=True))
        figures = {k: _number(v) for k, v in figures.items()}
        figures["spend_usd"] = float(figures["spend_usd"])
        figures["baseline_usd"] = float(figures["baseline_usd"])
        expected[row[0]] = figures
    if stores.backend == "postgres":
        sql = _PERCENTILES_PG.format(name=name, group_by=group_by)
        for row in await stores.query(sql, SINCE):
            expected[row[0]].update(zip(_PERCENTILE_FIGURES, row[1:], strict=True))
    else:
        ttfts: dict[Any, list[float]] = defaultdict(list)
        latencies: dict[Any, list[float]] = defaultdict(list)
        sql = f"SELECT {name}, ttft_ms, latency_ms FROM ledger WHERE started_at >= ?"
        for group, ttft, latency in await stores.query(sql, SINCE):
            if ttft is not None:
                ttfts[group].append(ttft)
            latencies[group].append(latency)
        for group, figures in expected.items():
            figures["ttft_p50_ms"] = _inclusive(ttfts[group], 50)
            figures["ttft_p95_ms"] = _inclusive(ttfts[group], 95)
            figures["latency_p50_ms"] = _inclusive(latencies[group], 50)
            figures["latency_p95_ms"] = _inclusive(latencies[group], 95)
    for figures in expected.values():
        figures["savings_usd"] = figures["baseline_usd"] - figures["spend_usd"]
        figures["error_rate"] = figures["errors"] / figures["requests"]
        figures["fallback_rate"] = figures["fallbacks"] / figures["ok"] if figures["ok"] else None
    return expected


def assert_figures(got: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    for figure, value in expected.items():
        if value is None or isinstance(value, int):
            assert got[figure] == value, f"{where}: {figure}"
        else:
            assert got[figure] == pytest.approx(value, rel=1e-9, abs=1e-12), f"{where}: {figure}"


async def test_every_figure_matches_sql_on_the_same_rows(stores: Stores) -> None:
    store = await stores.open()
    await store.create_key(make_key("alice", 1.0, id="key_a"))
    await store.create_key(make_key("bob", 2.0, id="key_b"))
    await write(store, known_ledger())
    report = await build_report(store, SINCE)

    assert report["since"] == SINCE
    totals = (await expected_figures(stores, None))["total"]
    # the row started exactly at SINCE counts, the one a microsecond before does not
    old = sum(1 for r in known_ledger() if r.started_at < SINCE)
    assert old > 1 and totals["requests"] == await store.count() - old
    assert "at_since" in {r.id for r in await store.rows(SINCE)}
    assert 0 < totals["fallbacks"] < totals["ok"]  # the ledger exercises every branch
    assert totals["stale"] and totals["client_closed"] and totals["provider_cost_requests"]
    assert_figures(report["totals"], totals, "totals")
    for dimension, column in DIMENSIONS.items():
        expected = await expected_figures(stores, column)
        groups = report[dimension]
        assert {g["name"] for g in groups} == set(expected), dimension
        assert len(groups) == len(expected) >= 3
        for group in groups:
            assert_figures(group, expected[group["name"]], f"{dimension}/{group['name']}")
        spends = [g["spend_usd"] for g in groups]
        assert spends == sorted(spends, reverse=True)  # biggest spend first
    names = {g["name"]: g["key_name"] for g in report["keys"]}
    assert names == {"key_a": "alice", "key_b": "bob", "key_gone": None, None: None}


async def test_sqlite_and_postgres_give_identical_figures(tmp_path: Path) -> None:
    rows = known_ledger(seed=11, size=300)
    reports = []
    for backend in BACKENDS:
        async with fresh_stores(backend, tmp_path) as stores:
            store = await stores.open()
            await write(store, rows)
            reports.append(await store.report(SINCE))
    assert reports[0] == reports[1]  # exactly: fsum and one percentile formula


async def test_an_empty_ledger(stores: Stores) -> None:
    store = await stores.open()
    await write(store, [make_row(started_at=SINCE - 10)])  # only an old row
    report = await build_report(store, SINCE)
    assert report["routes"] == report["models"] == report["keys"] == []
    totals = report["totals"]
    assert totals["requests"] == 0 and totals["spend_usd"] == 0.0
    assert totals["error_rate"] is None and totals["fallback_rate"] is None
    assert totals["ttft_p50_ms"] is None and totals["latency_p95_ms"] is None
    assert totals["provider_cost_usd"] is None
    assert orjson.loads(render_json(report)) == report
    assert len(render_csv(report).splitlines()) == 2  # header and total
    assert len(render_table(report).renderables) == 3


# -- renderers ---------------------------------------------------------------------------


def small_ledger() -> list[LedgerRow]:
    fallback = [{"model": "claude-y", "reason": "rate_limited"}]
    return [
        make_row(route="chat", model="gpt-x", key_id="key_a", started_at=SINCE + 1,
                 attempts=fallback, cost_usd=0.5, baseline_cost_usd=1.0, provider_cost_usd=0.45,
                 prompt_tokens=1000, completion_tokens=200, ttft_ms=100.0, latency_ms=1000.0),
        make_row(route="chat", model="gpt-x", key_id="key_a", started_at=SINCE + 2,
                 cost_usd=0.25, baseline_cost_usd=0.5, prompt_tokens=3000,
                 completion_tokens=800, ttft_ms=300.0, latency_ms=2000.0),
        make_row(route="code", model=None, key_id=None, started_at=SINCE + 3, outcome="error",
                 status=503, latency_ms=50.0),
        make_row(route="chat", started_at=SINCE - 1, cost_usd=100.0),  # before --since
    ]  # fmt: skip


@pytest.fixture
async def small_report(stores: Stores) -> dict[str, Any]:
    store = await stores.open()
    await store.create_key(make_key("alice", 1.0, id="key_a"))
    await write(store, small_ledger())
    return await build_report(store, SINCE)


def table_rows(report: dict[str, Any]) -> dict[str, list[str]]:
    """Every body row of the rendered tables, by its first cell: {label: cells}."""
    console = Console(record=True, width=400, color_system=None)
    found: dict[str, list[str]] = {}
    for i, table in enumerate(render_table(report).renderables):
        console.print(table)
        for line in console.export_text().splitlines():
            cells = [cell.strip() for cell in line.split("│")[1:-1]]
            if cells:
                found[f"{i}:{cells[0]}"] = cells[1:]
    return found


def test_the_table_shows_the_figures(small_report: dict[str, Any]) -> None:
    rows = table_rows(small_report)
    # requests errors fallback spend baseline saved provider-cost prompt completion
    # ttft-p50 ttft-p95 latency-p50 latency-p95
    chat = ["2", "0", "50.0%", "$0.7500", "$1.5000", "$0.7500", "$0.4500", "4,000", "1,000",
            "200", "290", "1,500", "1,950"]  # fmt: skip
    code = ["1", "1", "–", "$0.0000", "$0.0000", "$0.0000", "–", "0", "0", "–", "–", "50", "50"]
    total = ["3", "1", "50.0%", "$0.7500", "$1.5000", "$0.7500", "$0.4500", "4,000", "1,000",
             "200", "290", "1,000", "1,900"]  # fmt: skip
    assert rows["0:chat"] == chat
    assert rows["0:code"] == code
    assert rows["0:total"] == total
    assert rows["1:gpt-x"] == chat
    assert rows["1:(none)"] == code
    assert rows["2:key_a (alice)"] == chat
    assert rows["2:(no key)"] == code
    assert rows["2:total"] == total
    console = Console(record=True, width=400, color_system=None)
    console.print(render_table(small_report))  # the whole group, as `turnout report` prints it
    text = console.export_text()
    assert text.count(" since 2023-11-") == 3 and "key_a (alice)" in text and "$0.7500" in text


def test_json_parses_back_to_the_report(small_report: dict[str, Any]) -> None:
    parsed = orjson.loads(render_json(small_report))
    assert parsed == small_report
    assert parsed["totals"]["spend_usd"] == 0.75
    assert [g["name"] for g in parsed["routes"]] == ["chat", "code"]


def test_csv_has_a_header_and_one_line_per_group(small_report: dict[str, Any]) -> None:
    text = render_csv(small_report)
    lines = list(csv.reader(io.StringIO(text)))
    assert tuple(lines[0]) == CSV_COLUMNS
    records = list(csv.DictReader(io.StringIO(text)))
    groups = sum(len(small_report[d]) for d in DIMENSIONS)
    assert len(records) == groups + 1 == 7  # and the totals line
    by_line = {(r["dimension"], r["name"]): r for r in records}
    chat = by_line[("routes", "chat")]
    assert int(chat["requests"]) == 2 and float(chat["spend_usd"]) == 0.75
    assert float(chat["fallback_rate"]) == 0.5 and float(chat["ttft_p95_ms"]) == 290.0
    assert by_line[("routes", "code")]["provider_cost_usd"] == ""  # None
    assert by_line[("keys", "key_a")]["key_name"] == "alice"
    assert by_line[("models", "")]["errors"] == "1"  # the request no model answered
    total = by_line[("total", "")]
    for figure in ("spend_usd", "baseline_usd", "latency_p95_ms"):
        assert float(total[figure]) == small_report["totals"][figure]


# -- --since -----------------------------------------------------------------------------


def test_parse_since() -> None:
    now = 1_800_000_000.0
    assert parse_since("7d", now=now) == now - 7 * 86400
    assert parse_since("24h", now=now) == now - 86400
    assert parse_since("30m", now=now) == now - 1800
    assert parse_since("90s", now=now) == now - 90
    assert parse_since("2w", now=now) == now - 14 * 86400
    assert parse_since("1.5h", now=now) == now - 5400
    assert parse_since("all") == 0.0
    assert parse_since("2024-05-01") == datetime(2024, 5, 1).timestamp()  # local midnight
    assert parse_since("2024-05-01T12:30:00+00:00") == (
        datetime(2024, 5, 1, 12, 30, tzinfo=UTC).timestamp()
    )
    assert parse_since("2024-05-01T12:30:00Z") == parse_since("2024-05-01T12:30:00+00:00")
    for bad in ("7 days", "yesterday", "", "-3d"):
        with pytest.raises(ValueError, match="--since"):
            parse_since(bad)
