"""`turnout scenario list` and `turnout scenario run NAME [--speed N] [--report html|json|table]
[--out FILE]`: the production stories replayed with their figures (turnout/scenarios)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from turnout.cli.common import setup_logging
from turnout.scenarios import catalogue  # light; the runner (the whole gateway) loads on use

DEFAULT_SPEED = 1000.0  # a working day's traffic in about a minute


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `scenario` command and its two actions."""
    scenario = commands.add_parser("scenario", help="replay a production story, with figures")
    actions = scenario.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="the scenarios and their stories")
    play = actions.add_parser("run", help="run one; exit 1 when its expected outcome fails")
    play.add_argument("name", help="a scenario's name (see `turnout scenario list`)")
    play.add_argument(
        "--speed",
        type=float,
        default=None,
        help="simulated seconds per real second (default: the scenario's own SPEED, else"
        f" {DEFAULT_SPEED:g})",
    )
    play.add_argument("--report", choices=["table", "json", "html"], default="table")
    play.add_argument("--out", help="write the report to this file instead of stdout")
    play.add_argument(
        "--data-dir", help="keep the run's ledger here (turnout.db) instead of a temporary one"
    )


def scenario(args: argparse.Namespace) -> int:
    out = Console()
    if args.action == "list":
        for name in catalogue.names():
            story = catalogue.load(name).story
            out.print(f"[bold]{name}[/bold]  {story}", highlight=False, soft_wrap=True)
        return 0
    err = Console(stderr=True)
    try:
        chosen = catalogue.load(args.name)
    except KeyError as exc:
        err.print(f"turnout scenario: {exc.args[0]}", highlight=False)
        return 2
    # a story told in minutes (rate-limit windows) runs slower than a day's: its own SPEED
    speed = args.speed if args.speed is not None else getattr(chosen.traffic, "SPEED", None)
    speed = DEFAULT_SPEED if speed is None else float(speed)
    if speed <= 0:
        err.print("turnout scenario: --speed must be positive")
        return 2
    setup_logging("error")
    # the report tells the story (its alerts and events): the gateway's own error lines about
    # the upstreams a scenario breaks on purpose would only drown the live view
    logging.getLogger("turnout").setLevel(logging.CRITICAL)
    from turnout.scenarios import live, report
    from turnout.scenarios.runner import Progress, run

    progress = Progress()  # the run fills it in; the live view shows it meanwhile
    played = live.watched(run(chosen, speed, progress, data_dir=args.data_dir), progress, err)
    figures = report.figures(asyncio.run(played))
    _write(figures, args, out, err)
    if not figures["expect"]["ok"]:
        err.print("the expected outcome did not hold:", style="bold red")
        for failed in figures["expect"]["failed"]:
            err.print(f"  - {failed}", highlight=False)
        return 1
    return 0


def _write(figures: dict[str, Any], args: argparse.Namespace, out: Console, err: Console) -> None:
    """The report, in the format asked for, on stdout or in --out."""
    from turnout.scenarios import report

    if args.report == "table":
        if args.out:
            with open(args.out, "w") as file:
                Console(file=file, width=110).print(report.as_table(figures))
        else:
            out.print(report.as_table(figures))
    else:
        text = report.as_json(figures) + "\n" if args.report == "json" else report.as_html(figures)
        if args.out:
            Path(args.out).write_text(text)
        else:
            sys.stdout.write(text)
    if args.out:
        err.print(f"report written to {args.out}")
