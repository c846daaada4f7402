"""`turnout check`: one tiny request to every configured model, what an operator runs after
rotating a key. Exits non-zero when any model fails."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from turnout.accounting.cost import cost_usd
from turnout.cli.common import config_from_args, setup_logging
from turnout.execute import AllTargetsFailed, PassThroughError
from turnout.gateway import Gateway
from turnout.model import Request, Usage

PROBE = [{"role": "user", "content": "Reply with the single word: OK"}]


async def _check_model(gateway: Gateway, name: str) -> dict[str, Any]:
    plan = gateway.planner.plan(name)
    assert plan is not None
    request = Request(model=name, messages=PROBE, stream=True, max_tokens=8, temperature=0)
    row: dict[str, Any] = {"model": name, "provider": plan.targets[0].provider.name}
    started = time.perf_counter()
    try:
        stream = await gateway.executor.stream(plan, request)
        row["ttft_ms"] = round((time.perf_counter() - started) * 1000, 1)
        text, usage = [], Usage()
        async for delta in stream.deltas():
            text.append(delta.content or "")
            usage = delta.usage or usage
    except AllTargetsFailed as exc:
        row.update(status="FAIL", error="; ".join(a.reason for a in exc.attempts))
        return row
    except PassThroughError as exc:
        row.update(status="FAIL", error=f"{exc.error.reason}: {exc.error.message}")
        return row
    except Exception as exc:  # noqa: BLE001 - a check reports every failure, whatever it is
        row.update(status="FAIL", error=f"{type(exc).__name__}: {exc}")
        return row
    row.update(
        status="OK",
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=round(cost_usd(plan.targets[0].price, usage), 8),
        reply="".join(text).strip()[:40],
    )
    return row


async def _run(gateway: Gateway) -> list[dict[str, Any]]:
    await gateway.start()
    try:
        return [await _check_model(gateway, name) for name in gateway.config.models]
    finally:
        await gateway.close()


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="turnout check")
    columns = ["model", "provider", "status", "latency_ms", "ttft_ms", "prompt_tokens"]
    columns += ["completion_tokens", "cost_usd", "reply / error"]
    for column in columns:
        table.add_column(column)
    for row in rows:
        style = "green" if row["status"] == "OK" else "red"
        table.add_row(
            *[str(row.get(c, "")) for c in columns[:-1]],
            row.get("reply") if row["status"] == "OK" else row.get("error", ""),
            style=style,
        )
    return table


def check(args: argparse.Namespace) -> int:
    config = config_from_args(args.config)
    if config is None:
        return 2
    setup_logging("error")
    logging.getLogger("turnout").setLevel(logging.CRITICAL)  # failures go in the table
    rows = asyncio.run(_run(Gateway(config)))
    if args.json:
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        Console().print(_table(rows))
    return 0 if all(row["status"] == "OK" for row in rows) else 1
