"""The live view while a scenario runs: one updating line (simulated clock, requests,
failures, model mix, spend, alerts), on stderr so that `--report json` keeps stdout clean."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from rich.console import Console
from rich.live import Live
from rich.text import Text

from turnout import clock
from turnout.scenarios.runner import Progress

T = TypeVar("T")


def line(progress: Progress) -> Text:
    """`sim 13:05:12 · 612/1000 requests · 0 failed · scout 58% haiku 42% · $0.4121 · 1 alert`"""
    seconds = int(progress.elapsed)
    hms = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    done = max(sum(progress.served.values()), 1)
    mix = " ".join(f"{m} {n / done:.0%}" for m, n in progress.served.most_common(3))
    text = Text.assemble(
        ("sim ", "dim"),
        (hms, "bold"),
        (f" x{clock.speed:g}", "dim"),
        f" · {progress.done}/{progress.planned} requests · ",
        (f"{progress.failures} failed", "red" if progress.failures else "green"),
        f" · {mix or '-'} · ${progress.spend_usd:.4f}",
        (f" · {progress.alerts} alert{'s' * (progress.alerts != 1)}", "yellow"),
    )
    if progress.last_change:
        text.append(f" · {progress.last_change}", "magenta")
    return text


async def watched(work: Awaitable[T], progress: Progress, console: Console) -> T:
    """Awaits `work`, showing `progress` on `console` meanwhile (when it is a terminal)."""
    if not console.is_terminal:
        return await work
    with Live(line(progress), console=console, refresh_per_second=8, transient=False) as live:
        task = asyncio.ensure_future(work)
        while not task.done():
            await asyncio.wait({task}, timeout=0.125)
            live.update(line(progress))
        return task.result()
