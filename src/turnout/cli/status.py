"""`turnout status`: a running gateway's /health/providers as a table."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from turnout.cli.remote import Unreachable, call, error_message
from turnout.cli.tables import fit

_STYLE = {"healthy": "green", "half_open": "yellow", "rate_limited": "yellow"}


def _state_text(target: dict[str, Any], now: float) -> str:
    state = target["state"]
    if "until" in target:
        return f"{state} until {time.strftime('%H:%M:%S', time.localtime(target['until']))}" + (
            f" ({target['until'] - now:.0f}s)"
        )
    if state == "misconfigured":
        return f"misconfigured: {target.get('reason', '')}"  # folded in the table, not cut
    return state


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


# narrow terminal: what goes first (route, model and state always stay)
_DROP = ("TTFT p50/p95 ms", "error rate", "last error")


def _table(data: dict[str, Any], width: int) -> Table:
    now = time.time()
    table = Table(title="turnout status")
    for column in ("route", "model", "state", "error rate", "TTFT p50/p95 ms", "last error"):
        table.add_column(column)
    for route, info in data["routes"].items():
        for target in info["targets"]:
            error = target.get("last_error") or {}
            last = f"{error.get('class')} {error.get('status') or ''}".strip() if error else "-"
            marker = " (active)" if target["model"] == info["active"] else ""
            table.add_row(
                Text(route),
                Text(target["model"] + marker),
                Text(_state_text(target, now)),
                f"{target['error_rate'] * 100:.1f}%",
                f"{_ms(target['ttft_p50_ms'])}/{_ms(target['ttft_p95_ms'])}",
                Text(last),
                style=_STYLE.get(target["state"], "red"),
            )
    return fit(table, width, fold=("state", "last error"), drop=_DROP)


def status(args: argparse.Namespace) -> int:
    try:
        code, data = call(args.url, "/health/providers", args.key)
    except Unreachable as exc:
        print(f"turnout status: {exc}", file=sys.stderr)
        return 2
    if code != 200:
        print(f"turnout status: {error_message(data)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        console = Console()
        console.print(_table(data, console.width))
    return 0
