"""`turnout replay --route R --candidate M [--since 7d] [--limit N]`: the route's captured
requests sent to a candidate model under the route's guard, and a report of how it did
against what was recorded: a table, JSON, and an HTML page (`--html FILE`). Exits 1 when no
captured request could be replayed, 2 on a usage error."""

from __future__ import annotations

import argparse
import asyncio
import html
import logging
import sys
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from turnout.accounting.report import parse_since
from turnout.accounting.service import data_dir
from turnout.cli.common import config_from_args, setup_logging
from turnout.cli.tables import fit
from turnout.config.schema import Config
from turnout.gateway import Gateway
from turnout.gateway.replay import ReplayReport, replay


def _captured(path: Path, keep: set[str] | None, limit: int) -> list[dict[str, Any]]:
    """The last `limit` captured requests (of those whose ledger ids are in `keep`)."""
    lines = []
    with path.open("rb") as file:
        for raw in file:
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # a line cut by a crash mid-write
            if (
                isinstance(line, dict)
                and "request" in line
                and (keep is None or line.get("id") in keep)
            ):
                lines.append(line)
    return lines[-limit:]


async def _run(config: Config, args: argparse.Namespace, since: float) -> ReplayReport | str:
    path = data_dir(config) / "captures" / f"{args.route}.jsonl"
    if not path.exists():
        return f"no captured requests for route {args.route!r} ({path}): add `capture:` to it"
    gateway = Gateway(config)
    await gateway.start()
    try:
        store = gateway.accounting.store
        rows = {row.id: row for row in await store.rows(since)} if store is not None else {}
        keep = set(rows) if store is not None else None  # --since goes by the ledger's times
        captured = _captured(path, keep, args.limit)
        if not captured:
            return f"no captured requests for route {args.route!r} since {args.since}"
        try:
            return await replay(
                gateway, args.route, args.candidate, captured, rows, args.concurrency
            )
        except ValueError as exc:
            return str(exc)
    finally:
        await gateway.close()


def replay_command(args: argparse.Namespace) -> int:
    config = config_from_args(args.config)
    if config is None:
        return 2
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"turnout replay: {exc}", file=sys.stderr)
        return 2
    setup_logging("error")
    logging.getLogger("turnout").setLevel(logging.CRITICAL)  # failures go in the report
    result = asyncio.run(_run(config, args, since))
    if isinstance(result, str):
        print(f"turnout replay: {result}", file=sys.stderr)
        return 1
    summary = result.summary()
    if args.html:
        Path(args.html).write_text(render_html(summary))
    if args.format == "json":
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        console = Console()
        console.print(_table(summary, console.width))
        for example in summary["disagreements"]:
            console.print(f"[bold]{example['id']}[/bold] ({_why(example)})", markup=True)
            console.print(f"  recorded:  {(example['recorded'] or '-')[:160]}", markup=False)
            console.print(f"  candidate: {(example['answer'] or '-')[:160]}", markup=False)
    return 0


_FIGURES = (
    ("requests", "requests", str),
    ("success", "success_rate", "pct"),
    ("invalid output", "invalid_output_rate", "pct"),
    ("agreement", "agreement", str),
    ("latency p50/p95 ms", ("latency_p50_ms", "latency_p95_ms"), "pair"),
    ("recorded p50/p95 ms", ("recorded_latency_p50_ms", "recorded_latency_p95_ms"), "pair"),
    ("cost $", "cost_usd", str),
    ("recorded cost $", "recorded_cost_usd", str),
)


def _cell(summary: dict[str, Any], key: Any, kind: Any) -> str:
    if kind == "pair":
        return "/".join("-" if summary[k] is None else f"{summary[k]:g}" for k in key)
    value = summary[key]
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" if kind == "pct" else str(value)


def _table(summary: dict[str, Any], width: int) -> Table:
    table = Table(title=f"replay of {summary['route']} on {summary['candidate']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for label, key, kind in _FIGURES:
        table.add_row(label, _cell(summary, key, kind))
    return fit(table, width, fold=(), drop=())


def _why(example: dict[str, Any]) -> str:
    return example["failure"] or f"agreement {example['agreement']}"


def render_html(summary: dict[str, Any]) -> str:
    """One self-contained page: the figures, then the disagreeing answers side by side."""
    e = html.escape
    rows = "".join(
        f"<tr><th>{e(label)}</th><td>{e(_cell(summary, key, kind))}</td></tr>"
        for label, key, kind in _FIGURES
    )
    examples = "".join(
        "<tr>"
        f"<td>{e(x['id'])}<br><small>{e(_why(x))}</small></td>"
        f"<td>{e(x['prompt'])}</td><td><pre>{e(x['recorded'] or '-')}</pre></td>"
        f"<td><pre>{e(x['answer'] or '-')}</pre></td>"
        "</tr>"
        for x in summary["disagreements"]
    )
    title = f"turnout replay: {summary['route']} on {summary['candidate']}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ border: 1px solid #ccc; padding: .4em .7em; text-align: left; vertical-align: top; }}
pre {{ white-space: pre-wrap; max-width: 40em; margin: 0; }}
</style></head><body>
<h1>{e(title)}</h1>
<table>{rows}</table>
<h2>First disagreeing answers</h2>
<table><tr><th>request</th><th>prompt</th><th>recorded</th><th>candidate</th></tr>{examples}</table>
</body></html>
"""
