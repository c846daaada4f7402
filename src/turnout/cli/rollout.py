"""`turnout rollout status|start|promote|rollback|abort [ROUTE]`: a running gateway's canary
rollouts (the admin endpoints /admin/rollouts). Exits 1 when the action does not apply, 2
when the gateway cannot be reached."""

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


def rollout(args: argparse.Namespace) -> int:
    if args.action != "status" and not args.route:
        print(f"turnout rollout {args.action}: name the route", file=sys.stderr)
        return 2
    try:
        if args.action == "status":
            code, body = call(args.url, "/admin/rollouts", args.key)
        else:
            path = f"/admin/rollouts/{args.route}/{args.action}"
            code, body = call(args.url, path, args.key, method="POST")
    except Unreachable as exc:
        print(f"turnout rollout: {exc}", file=sys.stderr)
        return 2
    if code != 200:
        print(f"turnout rollout {args.action}: {error_message(body)}", file=sys.stderr)
        return 1
    states = body if isinstance(body, list) else [body]
    if args.route:
        states = [s for s in states if s["route"] == args.route]
    if args.json:
        print(json.dumps(states if args.action == "status" else states[0], indent=2))
        return 0
    console = Console()
    console.print(_table(states, console.width))
    return 0


def _table(states: list[dict[str, Any]], width: int) -> Table:
    table = Table(title="turnout rollouts")
    for column in ("route", "candidate", "status", "share", "candidate window", "last move"):
        table.add_column(column)
    for state in states:
        window = state["candidate_window"]
        rates = (
            f"{window['requests']} req, errors {_pct(window['error_rate'])},"
            f" invalid {_pct(window['invalid_output_rate'])}"
        )
        table.add_row(
            Text(state["route"]),
            Text(state["candidate"]),
            Text(state["status"]),
            f"{state['percent']:g}% (stage {state['stage'] + 1} of {len(state['stages'])})",
            Text(rates),
            Text(_last_move(state["history"])),
        )
    return fit(table, width, fold=("candidate window", "last move"), drop=("last move",))


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _last_move(history: list[dict[str, Any]]) -> str:
    if not history:
        return "-"
    last = history[-1]
    when = time.strftime("%H:%M:%S", time.localtime(last["at"]))
    why = (
        f" on {last['objective']} {last['observed']} > {last['limit']}" if last["objective"] else ""
    )
    return f"{when} {last['action']}{why}"
