"""`turnout report`: spend, savings, fallbacks and latency per route, model and key; and,
when routes have a response cache, its hit rate and savings in a table of their own.

The figures come from `Store.report()`; their exact definitions are in
`turnout.accounting.store.summary`. This module adds key names and renders the result as
rich tables, JSON or CSV.
"""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import datetime
from typing import Any

import orjson
from rich.console import Group
from rich.table import Table

from turnout.accounting.store import Store
from turnout.accounting.store.summary import DIMENSIONS, FIGURES

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_TITLES = {"routes": "Routes", "models": "Models", "keys": "Keys"}
_EMPTY = {"routes": "(none)", "models": "(none)", "keys": "(no key)"}
CSV_COLUMNS = ("dimension", "name", "key_name", *FIGURES)


def parse_since(text: str, now: float | None = None) -> float:
    """`7d`, `24h`, `30m`, `90s`, `2w` ago; `all`; or an ISO date/time (naive: local
    time, like every date a user types at a terminal) -> epoch seconds."""
    if text.strip().lower() == "all":
        return 0.0
    match = _RELATIVE.match(text)
    if match:
        now = time.time() if now is None else now
        return now - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected a duration like 7d, 24h or 30m, or a date like 2024-05-01"
        ) from None


async def build_report(store: Store, since: float) -> dict[str, Any]:
    """{since, generated_at, totals, routes, models, keys}; each group is {name, **figures},
    key groups also carry key_name (None for requests without a key or deleted keys)."""
    report = await store.report(since)
    names = {key.id: key.name for key in await store.list_keys()}
    for group in report["keys"]:
        group["key_name"] = names.get(group["name"])
    report["generated_at"] = time.time()
    return report


# -- rendering ---------------------------------------------------------------------------


def _money(value: float | None) -> str:
    if value is None:
        return "–"
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value >= 100:
        return f"{sign}${value:,.2f}"
    if value == 0 or value >= 0.0001:
        return f"{sign}${value:.4f}"
    return f"{sign}${value:.6f}"  # a few cheap requests: still not "$0.0000"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _count(value: int) -> str:
    return f"{value:,}"


_TABLE_COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("requests", "requests", _count),
    ("errors", "errors", _count),
    ("fallback_rate", "fallback", _rate),
    ("spend_usd", "spend", _money),
    ("baseline_usd", "baseline", _money),
    ("savings_usd", "saved", _money),
    ("provider_cost_usd", "provider cost", _money),
    ("prompt_tokens", "prompt tok", _count),
    ("completion_tokens", "compl. tok", _count),
    ("ttft_p50_ms", "TTFT p50 ms", _ms),
    ("ttft_p95_ms", "TTFT p95 ms", _ms),
    ("latency_p50_ms", "lat. p50 ms", _ms),
    ("latency_p95_ms", "lat. p95 ms", _ms),
)


def _label(dimension: str, group: dict[str, Any]) -> str:
    name = group["name"] or _EMPTY[dimension]
    key_name = group.get("key_name")
    return f"{name} ({key_name})" if key_name else name


def render_table(report: dict[str, Any]) -> Group:
    """One rich Table per dimension (routes, models, keys), each ending in the totals, as
    one renderable: `Console().print(render_table(report))`; `.renderables` are the tables."""
    since = datetime.fromtimestamp(report["since"]).isoformat(sep=" ", timespec="minutes")
    tables: list[Table] = []
    for dimension in DIMENSIONS:
        table = Table(title=f"{_TITLES[dimension]} since {since}", title_justify="left")
        table.add_column(dimension[:-1])
        for _, header, _ in _TABLE_COLUMNS:
            table.add_column(header, justify="right")
        groups = report[dimension]
        for i, group in enumerate(groups):
            table.add_row(
                _label(dimension, group),
                *(fmt(group[field]) for field, _, fmt in _TABLE_COLUMNS),
                end_section=i == len(groups) - 1,
            )
        totals = report["totals"]
        table.add_row("total", *(fmt(totals[field]) for field, _, fmt in _TABLE_COLUMNS))
        tables.append(table)
    cache = _cache_table(report, since)
    if cache is not None:
        tables.append(cache)
    return Group(*tables)


_CACHE_COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("cache_hits", "hits", _count),
    ("cache_misses", "misses", _count),
    ("cache_bypassed", "bypassed", _count),
    ("cache_hit_rate", "hit rate", _rate),
    ("cache_saved_usd", "saved by cache", _money),
)


def _cache_table(report: dict[str, Any], since: str) -> Table | None:
    """Per route with a response cache: hits, misses, hit rate and what hits saved. Apart
    from the tables above: their `saved` is routing's (against a baseline), this is the
    cache's (what the hits' answers cost when they were made). None: no cached route."""

    def asked(figures: dict[str, Any]) -> bool:
        return bool(figures["cache_hits"] or figures["cache_misses"] or figures["cache_bypassed"])

    groups = [group for group in report["routes"] if asked(group)]
    if not groups:
        return None
    table = Table(title=f"Response cache since {since}", title_justify="left")
    table.add_column("route")
    for _, header, _ in _CACHE_COLUMNS:
        table.add_column(header, justify="right")
    for i, group in enumerate(groups):
        table.add_row(
            _label("routes", group),
            *(fmt(group[field]) for field, _, fmt in _CACHE_COLUMNS),
            end_section=i == len(groups) - 1,
        )
    totals = report["totals"]
    table.add_row("total", *(fmt(totals[field]) for field, _, fmt in _CACHE_COLUMNS))
    return table


def render_json(report: dict[str, Any]) -> str:
    return orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()


def render_csv(report: dict[str, Any]) -> str:
    """A header, one line per group (dimension: routes | models | keys), then one `total`
    line. Empty cells are None; floats are written in full (repr) precision."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def cells(dimension: str, name: Any, key_name: Any, figures: dict[str, Any]) -> list[Any]:
        values = [dimension, name, key_name, *(figures[field] for field in FIGURES)]
        return ["" if value is None else value for value in values]

    for dimension in DIMENSIONS:
        for group in report[dimension]:
            writer.writerow(cells(dimension, group["name"], group.get("key_name"), group))
    writer.writerow(cells("total", None, None, report["totals"]))
    return out.getvalue()
