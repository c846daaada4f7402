"""`turnout report`: spend, savings, fallback rate, requests and latency from the ledger."""

from __future__ import annotations

import argparse
import asyncio
import sys

from rich.console import Console

from turnout.accounting.report import (
    build_report,
    parse_since,
    render_csv,
    render_json,
    render_table,
)
from turnout.accounting.service import make_configured_store
from turnout.cli.common import config_from_args


async def _build(store, since: float) -> dict:
    await store.start()
    try:
        return await build_report(store, since)
    finally:
        await store.close()


def report(args: argparse.Namespace) -> int:
    config = config_from_args(args.config)
    if config is None:
        return 2
    store = make_configured_store(config)
    if store is None:
        print("turnout report: the ledger is off (ledger.backend: off)", file=sys.stderr)
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
        Console().print(render_table(data))
    return 0
