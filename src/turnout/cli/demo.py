"""`turnout demo`: a scripted story told through a real gateway and simulated providers.

The cheap primary (scout) is healthy, then has an outage, then is rate-limited, then
recovers; the fallback (haiku) carries the traffic meanwhile. A live table shows which model
served, fallbacks by reason and latency; a summary closes it. No key, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from turnout.accounting.cost import cost_usd
from turnout.cli.common import setup_logging
from turnout.cli.tables import fit
from turnout.config import parse_config
from turnout.gateway import Gateway
from turnout.model import Usage
from turnout.server import GatewayServer
from turnout.sim import SimServer
from turnout.sim.schema import SimBehaviour

HEALTHY = SimBehaviour(
    ttft=0.08, ttft_jitter=0.3, tokens_per_second=400, reply="Scout here: cheap, fast and correct."
)
FALLBACK = SimBehaviour(
    ttft=0.25, ttft_jitter=0.3, tokens_per_second=200, reply="Haiku here: dependable, and pricier."
)


@dataclass(frozen=True)
class Phase:
    title: str
    seconds: float
    scout: SimBehaviour


STORY = [
    Phase("1. all healthy", 6, HEALTHY),
    Phase("2. scout outage (HTTP 500)", 9, HEALTHY.model_copy(update={"error_rate": {500: 1.0}})),
    Phase(
        "3. scout rate-limited (429, Retry-After: 5)",
        8,
        HEALTHY.model_copy(update={"rate_limit_rate": 1.0, "retry_after": 5}),
    ),
    Phase("4. scout recovered", 6, HEALTHY),
]
PRICES = {"scout": {"input": 0.08, "output": 0.30}, "haiku": {"input": 1.00, "output": 5.00}}


@dataclass
class Tally:
    served: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    cost: float = 0.0
    cost_all_fallback: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.served.values()) + self.errors

    def percentile_ms(self, pct: float) -> str:
        if not self.latencies:
            return "-"
        ordered = sorted(self.latencies)
        return f"{ordered[min(len(ordered) - 1, int(pct / 100 * len(ordered)))] * 1000:.0f}"


def _reason_kind(reason: str) -> str:
    """`server_error(500)` stays; `open(4.2s)` (a skip, no attempt made) becomes `open, skipped`."""
    name, _, detail = reason.partition("(")
    return reason if detail.rstrip(")").isdigit() else f"{name}, skipped"


def _config(sim_url: str, speed: float) -> dict:
    # the breaker's clock runs at the story's speed, so recoveries show within each phase
    health = {
        "breaker": {"open_for": 1.0 / speed, "max_open_for": 2.0 / speed},
        "probe_interval": 0.2 / speed,
    }
    return {
        "health": health,
        "providers": {"sim": {"kind": "openai", "base_url": sim_url}},
        "models": {name: {"provider": "sim", "price": price} for name, price in PRICES.items()},
        "routes": {
            "chat": {
                "targets": ["scout", "haiku"],
                "timeout": {"connect": "1s", "ttft": "2s", "total": "10s"},
            }
        },
    }


async def _one_request(
    session: aiohttp.ClientSession, url: str, tally: Tally, gateway: Gateway
) -> None:
    body = {
        "model": "chat",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "What should I cook tonight?"}],
    }
    started = time.perf_counter()
    try:
        async with session.post(url, json=body) as response:
            if response.status != 200:
                tally.errors += 1
                return
            model = response.headers.get("x-turnout-model", "?")
            for item in filter(None, response.headers.get("x-turnout-fallback", "").split(", ")):
                tally.fallbacks[_reason_kind(item.split("=", 1)[1])] += 1
            usage = None
            async for line in response.content:
                if line.startswith(b"data: {") and b'"usage"' in line:
                    usage = orjson.loads(line[6:]).get("usage")
    except aiohttp.ClientError:
        tally.errors += 1
        return
    tally.latencies.append(time.perf_counter() - started)
    tally.served[model] += 1
    if usage:
        used = Usage(usage["prompt_tokens"], usage["completion_tokens"])
        prices = {t.name: t.price for t in gateway.planner.plans["chat"].targets}
        tally.cost += cost_usd(prices[model], used)
        tally.cost_all_fallback += cost_usd(prices["haiku"], used)


def _table(phase: str, tally: Tally, remaining: float, width: int) -> Group:
    table = Table(title=f"turnout demo · {phase} · {remaining:4.1f}s left in this phase")
    for column in (
        "requests",
        "served by scout",
        "served by haiku",
        "client errors",
        "fallbacks by reason",
        "p50 ms",
        "p95 ms",
    ):
        table.add_column(column, justify="left" if column.startswith("fallbacks") else "right")
    # one reason a line: a reason such as `open, skipped` holds a comma itself
    reasons = "\n".join(f"{k} x{v}" for k, v in tally.fallbacks.most_common()) or "-"
    table.add_row(
        str(tally.requests),
        str(tally.served["scout"]),
        str(tally.served["haiku"]),
        str(tally.errors),
        Text(reasons),
        tally.percentile_ms(50),
        tally.percentile_ms(95),
    )
    return Group(fit(table, width, fold=("fallbacks by reason",)))


async def _story(speed: float, port: int, console: Console) -> Tally:
    tally = Tally()
    async with SimServer({"scout": HEALTHY, "haiku": FALLBACK}, seed=42) as sim:
        gateway = Gateway(parse_config(_config(sim.url, speed), "<demo>"))
        server = GatewayServer(gateway, "127.0.0.1", port)
        await server.start()
        url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
        # escaped: rich would read the square brackets of the list as markup and drop them
        console.print(
            f"gateway on {url.removesuffix('/chat/completions')} · route chat = "
            + escape("[scout ($0.30/M out), haiku ($5/M out)]")
        )
        try:
            async with aiohttp.ClientSession() as session:
                with Live(console=console, refresh_per_second=8) as live:
                    for phase in STORY:
                        scout = phase.scout
                        if scout.retry_after:
                            scout = scout.model_copy(
                                update={"retry_after": scout.retry_after / speed}
                            )
                        sim.state.set_behaviour("scout", scout)
                        ends = time.monotonic() + phase.seconds / speed
                        while (left := ends - time.monotonic()) > 0:
                            batch = [_one_request(session, url, tally, gateway) for _ in range(4)]
                            await asyncio.gather(*batch)
                            live.update(_table(phase.title, tally, left, console.width))
                            await asyncio.sleep(0.1 / speed)
        finally:
            await server.close()
    return tally


def _summary(tally: Tally) -> Text:
    """The story's outcome in a few plain lines (no markup: nothing in them is styled by
    accident), fallbacks one reason a line."""
    saved = tally.cost_all_fallback - tally.cost
    reasons = [f"  {reason:<28} {count:>6}" for reason, count in tally.fallbacks.most_common()]
    lines = [
        f"{tally.requests} requests, {tally.errors} client-visible errors.",
        f"Served: scout {tally.served['scout']}, haiku {tally.served['haiku']}.",
        "Fallbacks by reason:" if reasons else "Fallbacks: none.",
        *reasons,
        (
            f"Cost: ${tally.cost:.6f}, against ${tally.cost_all_fallback:.6f} had every"
            f" request gone to haiku (saved ${saved:.6f})."
        ),
        f"Latency: p50 {tally.percentile_ms(50)} ms, p95 {tally.percentile_ms(95)} ms.",
    ]
    return Text.assemble(("\nSummary: ", "bold"), "\n".join(lines))


def demo(args: argparse.Namespace) -> int:
    setup_logging("error")  # the table tells the story; per-failure warnings would drown it
    console = Console()
    tally = asyncio.run(_story(max(args.speed, 0.1), args.port, console))
    console.print(_summary(tally))
    return 0 if tally.errors == 0 else 1
