"""Does hedging cut the tail of time to first token, and what does it cost? (issue 16)

    python bench/hedge.py                        # about 4 minutes
    python bench/hedge.py --requests 400 --concurrency 8

A simulator (`turnout sim`, its own process) serves two identical models whose TTFT is heavy
tailed: lognormal with median 800 ms, and 5% of requests ten times slower
(`ttft_distribution: lognormal`, `slow_rate: 0.05`, `slow_factor: 10`; seeded). Two runs of
the same streamed requests through `turnout serve`, route `chat` = [primary, backup]:

- **no hedge**: failover only (nothing fails, so every request waits for the primary);
- **hedge at p95**: `hedge: {after: p95, max_extra: 0.1}`: a request still without a first
  token at the primary's recent TTFT p95 gets a second attempt on the backup.

Each run starts with a warm-up (health learns the primary's p95; not measured). The client
measures TTFT (request sent -> first content chunk). Extra upstream requests come from the
sim's own counters; cost from the ledger (winners, and any loser whose usage the upstream
reported before it was cancelled: the OpenAI wire reports usage at the end, so none), with
the worst case beside it: every cancelled loser billed for its whole prompt.

Then a **sustained slowdown**: after the warm-up the primary's every request becomes ten
times slower, with `hedge: {after: 1s, max_extra: 0.1}` so that every request wants a hedge;
the hedges made stay within `max_extra` of the requests (a token bucket that requests
refill), however long it lasts.

Writes a Markdown table (stdout and bench/out/hedge.md) and the chart bench/hedge.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
PRICE = {"input": 3.0, "output": 15.0}  # USD per million tokens, both models
HEAVY_TAIL = {
    "ttft": 0.8,  # the median
    "ttft_distribution": "lognormal",
    "ttft_sigma": 0.3,
    "slow_rate": 0.05,
    "slow_factor": 10,
    "tokens_per_second": 2000,
    "reply": "A short answer of a few words, streamed as it comes.",
}
HEDGE = {"after": "p95", "max_extra": 0.1}
# the slowdown run hedges at a fixed 1 s: every request of the slowed primary then wants a
# hedge, and only the bucket stands between them and the backup
HEDGE_FIXED = {"after": "1s", "max_extra": 0.1}
BODY = {
    "model": "chat",
    "stream": True,
    "stream_options": {"include_usage": True},
    "messages": [{"role": "user", "content": "Say something short about hedged requests."}],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready")


@contextlib.contextmanager
def started(argv: list[str], ready_url: str, what: str, env: dict[str, str], log: Path):
    """A child process in its own group, stopped (the group killed) however we leave."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    try:
        wait_ready(ready_url, process, what)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def admin(port: int, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        data=data,
        method="POST" if data else "GET",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def sim_requests(port: int) -> dict[str, int]:
    return {name: m["requests"] for name, m in admin(port, "/sim/stats").items()}


@dataclass
class Sample:
    ttft: float  # seconds
    hedged: bool
    model: str


@dataclass
class Run:
    name: str
    samples: list[Sample] = field(default_factory=list)
    upstream_requests: int = 0
    cost_usd: float = 0.0
    loser_cost_usd: float = 0.0  # what the ledger knows losers cost (usage they reported)
    losers: int = 0

    def pct(self, p: float) -> float:
        ttfts = sorted(s.ttft for s in self.samples)
        return statistics.quantiles(ttfts, n=1000, method="inclusive")[round(p * 10) - 1]

    @property
    def hedges(self) -> int:
        return sum(s.hedged for s in self.samples)


async def one(session: aiohttp.ClientSession, url: str) -> Sample:
    started_at = time.perf_counter()
    ttft = None
    async with session.post(url, json=BODY) as response:
        assert response.status == 200, await response.text()
        hedged = "x-turnout-hedged" in response.headers
        model = response.headers.get("x-turnout-model", "")
        async for line in response.content:
            if ttft is None and line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    ttft = time.perf_counter() - started_at
    assert ttft is not None, "no content"
    return Sample(ttft, hedged, model)


async def load(port: int, requests: int, concurrency: int, run: Run | None) -> None:
    """`requests` streamed requests, `concurrency` at a time; samples into `run`."""
    url = f"http://{HOST}:{port}/v1/chat/completions"
    queue = iter(range(requests))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def worker() -> None:
            for _ in queue:
                sample = await one(session, url)
                if run is not None:
                    run.samples.append(sample)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def gateway_config(sim_port: int, hedge: dict[str, Any] | None) -> dict[str, Any]:
    # the slowest first tokens (8 s median, x2 at the lognormal's tail) are waited for,
    # not failed over: the run compares waiting with hedging
    route: dict[str, Any] = {"targets": ["primary", "backup"], "timeout": {"ttft": "60s"}}
    if hedge is not None:
        route["hedge"] = hedge
    return {
        "providers": {"sim": {"kind": "openai", "base_url": f"http://{HOST}:{sim_port}/v1"}},
        "models": {
            name: {"provider": "sim", "price": PRICE, "supports": ["tools", "json"]}
            for name in ("primary", "backup")
        },
        "routes": {"chat": route},
    }


@contextlib.contextmanager
def system(work: Path, name: str, seed: int, hedge: dict[str, Any] | None) -> Iterator[Any]:
    """The sim and a gateway in front of it; yields (sim port, gateway port, data dir)."""
    sim_port, gateway_port = free_port(), free_port()
    sim_file = work / f"{name}-sim.yaml"
    sim_file.write_text(
        yaml.safe_dump({"seed": seed, "models": {"primary": HEAVY_TAIL, "backup": HEAVY_TAIL}})
    )
    config = work / f"{name}.yaml"
    config.write_text(yaml.safe_dump(gateway_config(sim_port, hedge)))
    data = work / f"{name}-data"
    data.mkdir()
    turnout = [sys.executable, "-m", "turnout.cli.main"]
    env = {"TURNOUT_DATA_DIR": str(data)}
    sim_argv = [*turnout, "sim", "--config", str(sim_file), "--port", str(sim_port)]
    gw_argv = [*turnout, "serve", "--config", str(config), "--port", str(gateway_port)]
    with (
        started(
            sim_argv, f"http://{HOST}:{sim_port}/sim/stats", "sim", env, work / f"{name}-sim.log"
        ),
        started(
            gw_argv, f"http://{HOST}:{gateway_port}/health", "turnout", env, work / f"{name}.log"
        ),
    ):
        yield sim_port, gateway_port, data


def ledger_costs(data: Path, skip: int) -> tuple[float, float, int]:
    """(winners' cost, losers' known cost, losers) over the ledger's rows after `skip`."""
    from turnout.accounting.store import make_store

    async def read() -> list[Any]:
        store = make_store("sqlite", path=str(data / "turnout.db"))
        await store.start()
        try:
            return await store.rows()
        finally:
            await store.close()

    rows = sorted(asyncio.run(read()), key=lambda r: r.started_at)[skip:]
    lost = [a for r in rows for a in r.attempts if str(a.get("reason", "")).endswith("(lost)")]
    known = sum(a.get("cost_usd") or 0.0 for a in lost)
    return sum(r.cost_usd for r in rows), known, len(lost)


def measure(work: Path, name: str, args: argparse.Namespace, hedge: dict | None) -> Run:
    run = Run(name)
    with system(work, name, args.seed, hedge) as (sim_port, port, data):
        asyncio.run(load(port, args.warmup, args.concurrency, None))
        before = sum(sim_requests(sim_port).values())
        asyncio.run(load(port, args.requests, args.concurrency, run))
        run.upstream_requests = sum(sim_requests(sim_port).values()) - before
    # the gateway has stopped: its ledger is drained
    run.cost_usd, run.loser_cost_usd, run.losers = ledger_costs(data, args.warmup)
    return run


def slowdown(work: Path, args: argparse.Namespace) -> list[Sample]:
    """The primary turns ten times slower on every request after the warm-up."""
    samples: list[Sample] = []
    with system(work, "slowdown", args.seed, HEDGE_FIXED) as (sim_port, port, _):
        asyncio.run(load(port, args.warmup, args.concurrency, None))
        slow = {**HEAVY_TAIL, "slow_rate": 1.0}
        admin(sim_port, "/sim/models/primary", slow)
        run = Run("slowdown")
        asyncio.run(load(port, args.slow_requests, args.concurrency, run))
        samples = run.samples
    return samples


def worst_case_usd(losers: int) -> float:
    """Every cancelled loser billed for its prompt (what a provider may charge for prefill)."""
    prompt_tokens = 20  # the bench's prompt, about
    return losers * prompt_tokens * PRICE["input"] / 1_000_000


def table(base: Run, hedged: Run, samples: list[Sample], cap: float) -> str:
    def ms(value: float) -> str:
        return f"{value * 1000:,.0f}"

    n = len(base.samples)
    lines = [
        "| run | p50 TTFT ms | p95 TTFT ms | p99 TTFT ms | max ms | upstream requests | extra"
        + " | hedges | cost USD (ledger) | worst case + |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in (base, hedged):
        extra = run.upstream_requests / len(run.samples) - 1
        lines.append(
            f"| {run.name} | {ms(run.pct(50))} | {ms(run.pct(95))} | {ms(run.pct(99))} "
            f"| {ms(max(s.ttft for s in run.samples))} | {run.upstream_requests} "
            f"| {extra:+.1%} | {run.hedges} | {run.cost_usd:.5f} "
            f"| {worst_case_usd(run.losers) + run.loser_cost_usd:.5f} |"
        )
    cut = 1 - hedged.pct(99) / base.pct(99)
    lines.append("")
    lines.append(
        f"p99 TTFT cut by **{cut:.0%}** ({ms(base.pct(99))} -> {ms(hedged.pct(99))} ms) for "
        f"**{hedged.upstream_requests / n - 1:+.1%}** upstream requests ({n} requests each)."
    )
    hedges = sum(s.hedged for s in samples)
    lines.append(
        f"Sustained slowdown (primary 10x slower on every request, `after: 1s`, "
        f"{len(samples)} requests): "
        f"**{hedges} hedges = {hedges / len(samples):.1%}** of requests, cap {cap:.0%} "
        f"(plus the bucket's banked hedges)."
    )
    return "\n".join(lines)


def chart(base: Run, hedged: Run, samples: list[Sample], cap: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = ["p50", "p95", "p99"]
    xs = range(len(labels))
    width = 0.38
    for offset, run, colour in ((-width / 2, base, "#999999"), (width / 2, hedged, "#2a7ab9")):
        values = [run.pct(p) * 1000 for p in (50, 95, 99)]
        bars = left.bar([x + offset for x in xs], values, width, label=run.name, color=colour)
        left.bar_label(bars, fmt="%.0f", fontsize=8)
    left.set_xticks(list(xs), labels)
    left.set_ylabel("TTFT, ms")
    left.set_title("Heavy-tailed TTFT (lognormal, 5% x10)")
    left.legend()

    hedges, ratios = 0, []
    for index, sample in enumerate(samples, 1):
        hedges += sample.hedged
        ratios.append(hedges / index)
    right.plot(range(1, len(samples) + 1), ratios, color="#2a7ab9", label="hedges / requests")
    right.axhline(cap, color="#c0392b", linestyle="--", label=f"max_extra {cap:.0%}")
    right.set_ylim(0, max(0.3, max(ratios) * 1.1))
    right.set_xlabel("requests since the primary slowed down")
    right.set_title("Sustained slowdown: the cap holds")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--slow-requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--chart", type=Path, default=HERE / "hedge.png")
    args = parser.parse_args()
    load_note = f"load average before: {os.getloadavg()[0]:.2f}"
    with tempfile.TemporaryDirectory(prefix="turnout-hedge-") as tmp:
        work = Path(tmp)
        base = measure(work, "no hedge", args, None)
        hedged = measure(work, "hedge at p95", args, HEDGE)
        samples = slowdown(work, args)
    cap = float(HEDGE["max_extra"])  # type: ignore[arg-type]
    text = table(base, hedged, samples, cap)
    text += f"\n\n{load_note}, after: {os.getloadavg()[0]:.2f}"
    print(text)
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "hedge.md").write_text(text + "\n")
    chart(base, hedged, samples, cap, args.chart)
    print(f"chart: {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
