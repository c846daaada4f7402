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
from rich.text import Text

from turnout.cli.common import config_from_args, setup_logging
from turnout.cli.tables import fit
from turnout.config.schema import Config
from turnout.gateway import Gateway
from turnout.model import Delta, Request, Usage
from turnout.model.embeddings import EmbeddingRequest
from turnout.model.errors import GatewayError
from turnout.routing.capabilities import serves_embeddings

PROBE = [{"role": "user", "content": "Reply with the single word: OK"}]


class _Collector:
    """The check's end of a stream, in place of an HTTP client: it is the stream client and
    the encoder at once, and keeps the text, the usage and a mid-stream error."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.usage = Usage()
        self.failure: str | None = None

    def connected(self) -> bool:
        return True

    def absorb_cut(self) -> bool:
        return False

    async def open(self) -> None:
        return None

    async def write(self, data: bytes) -> None:
        return None

    def start(self) -> bytes:
        return b""

    def delta(self, delta: Delta) -> bytes:
        self.text.append(delta.content or "")
        return b""

    def finish(self, usage: Usage | None) -> bytes:
        self.usage = usage or self.usage
        return b""

    def error(self, status: int, message: str, code: str) -> bytes:
        self.failure = message
        return b""


async def _check_model(gateway: Gateway, name: str) -> dict[str, Any]:
    """One tiny streamed request forced to one model (an embedding, for an embeddings model),
    through the same core as clients'."""
    plan = gateway.runtime.plan(name)
    assert plan is not None
    request = Request(model=name, messages=PROBE, stream=True, max_tokens=8, temperature=0)
    row: dict[str, Any] = {"model": name, "provider": plan.targets[0].provider.name}
    collector = _Collector()
    exchange = gateway.arrive("check", collector)
    started = time.perf_counter()
    try:
        if serves_embeddings(plan):  # an embeddings model is checked with an embedding
            embedding = await gateway.embed(EmbeddingRequest(name, ["OK"]), exchange)
            answer = embedding.answer
            collector.usage = embedding.embedded.result.usage or Usage()
            vector = embedding.embedded.result.vectors[0]
            collector.text.append(f"{len(vector)} dimensions")
        else:
            answer = await gateway.handle(request, exchange)
            assert answer.relay is not None
            await answer.relay.run(collector, collector)
    except GatewayError as exc:
        row.update(status="FAIL", error=exchange.refuse(exc).message)
        return row
    except Exception as exc:  # noqa: BLE001 - a check reports every failure, whatever it is
        exchange.finish()
        row.update(status="FAIL", error=f"{type(exc).__name__}: {exc}")
        return row
    if collector.failure is not None:
        row.update(status="FAIL", error=collector.failure)
        return row
    row.update(
        status="OK",
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        ttft_ms=round(answer.ttft_ms or 0.0, 1),
        prompt_tokens=collector.usage.prompt_tokens,
        completion_tokens=collector.usage.completion_tokens,
        cost_usd=round(exchange.row.cost_usd, 8),
        reply="".join(collector.text).strip()[:40],
    )
    return row


def _checked(config: Config) -> list[str]:
    """What is checked: each model, and each deployment of a model with several (forced
    as `MODEL@DEPLOYMENT`: a standby's rejected key must not hide behind the primary)."""
    names = []
    for name, model in config.models.items():
        if model.deployments is None:
            names.append(name)
        else:
            names += [f"{name}@{d.label}" for d in model.deployments]
    return names


async def _run(gateway: Gateway) -> list[dict[str, Any]]:
    await gateway.start()
    try:
        return [await _check_model(gateway, name) for name in _checked(gateway.config)]
    finally:
        await gateway.close()


# narrow terminal: what goes first (model, status and the reply or error always stay)
_DROP = ("tokens in/out", "cost $", "TTFT ms", "provider", "latency ms")


def _table(rows: list[dict[str, Any]], width: int) -> Table:
    table = Table(title="turnout check")
    for column in ("model", "provider", "status"):
        table.add_column(column)
    for column in ("latency ms", "TTFT ms", "tokens in/out", "cost $"):
        table.add_column(column, justify="right")
    table.add_column("reply / error")
    for row in rows:
        ok = row["status"] == "OK"
        table.add_row(
            Text(row["model"]),
            Text(row["provider"]),
            row["status"],
            str(row.get("latency_ms", "")),
            str(row.get("ttft_ms", "")),
            f"{row['prompt_tokens']}/{row['completion_tokens']}" if ok else "",
            f"{row['cost_usd']:.8f}".rstrip("0").rstrip(".") if ok else "",
            Text(row["reply"] if ok else row["error"]),
            style="green" if ok else "red",
        )
    return fit(table, width, fold=("reply / error",), drop=_DROP)


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
        console = Console()
        console.print(_table(rows, console.width))
    return 0 if all(row["status"] == "OK" for row in rows) else 1
