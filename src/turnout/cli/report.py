"""`turnout report`: spend, savings, fallback rate, requests and latency from the ledger."""

from __future__ import annotations

import argparse
import asyncio
import sys

from rich.console import Console, Group
from rich.table import Table

from turnout.accounting.report import (
    build_report,
    parse_since,
    render_csv,
    render_json,
    render_table,
)
from turnout.cli.common import configured_store
from turnout.cli.tables import fit_alike

# narrow terminal: the figures that go first (the group, requests and spend always stay)
_DROP = (
    "provider cost",
    "baseline",
    "compl. tok",
    "prompt tok",
    "TTFT p95 ms",
    "lat. p95 ms",
    "TTFT p50 ms",
    "lat. p50 ms",
    "errors",
    "fallback",
    "saved",
)


async def _build(store, since: float) -> dict:
    await store.start()
    try:
        return await build_report(store, since)
    finally:
        await store.close()


def report(args: argparse.Namespace) -> int:
    store = configured_store(args.config, "report")
    if store is None:
        return 2
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"turnout report: {exc}", file=sys.stderr)
        return 2
    data = asyncio.run(_build(store, since))
    if args.format == "json":
        sys.stdout.write(render_json(data) + "\n")
    elif args.format == "csv":
        sys.stdout.write(render_csv(data))
    else:
        console = Console()
        tables = [t for t in render_table(data).renderables if isinstance(t, Table)]
        console.print(Group(*fit_alike(tables, console.width, drop=_DROP)))
    return 0
