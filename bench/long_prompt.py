"""Long prompts (issue 16, item 5): a 160k-token prompt near a 200k window, turnout against the
Python floor, and what it does to small requests sent at the same time.

    python bench/long_prompt.py            # about 2 minutes
    python bench/long_prompt.py --quick    # about 1 minute

Each server (bench/floor_proxy.py, `turnout serve`) runs alone, pinned to core 1, with the
event-loop lag probe of bench/loop_lag.py in its loop. The upstream (an aiohttp app in this
file that reads the body and answers a fixed chat.completion) and the load (this process,
uvloop) share core 0. turnout's model has `context_window: 200000`, so a 647k-character
prompt (~168k tokens) is one the byte bound cannot clear: routing must know its count (a
never-seen prompt's count runs beside its first attempt; this upstream answers before it ends).

Phases, per server, in this order:

| phase | what is sent |
|---|---|
| long: same prompt | the same 160k-token prompt, one request after another (its count cached) |
| long: new turn | that prompt as the first message, plus a new short question each time |
| long: new prompt | a prompt never seen before each time (a count from scratch) |
| small | 2-message chat completions, open loop at `--rate` per second |
| small + long (new) | the same small load, and new long prompts back to back alongside |
| small + long (same) | the same small load, and the same long prompt back to back alongside |

Reported per phase: request latency p50 / p99 (long: `--long` requests; small: `--seconds` of
load), and the server's event-loop lag p50 / p99 / max (how late the 1 ms probe woke). The
figures to quote are turnout's p50 over the floor's for the long prompt, and the small
requests' p99 with long prompts alongside against without. Written to
bench/out/long-prompt.md (logs in bench/out/logs/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from run import BENCH, HOST, LOGS, OUT, Launch, free_port, running, turnout_bin

SERVER_CORE, LOAD_CORE = "1", "0"
WINDOW = 200_000
WORDS = (BENCH.parent / "README.md").read_text().split()
COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "bench-model",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16},
}
SMALL = json.dumps(
    {
        "model": "chat",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hi."},
        ],
    }
).encode()


def document(seed: int, chars: int = 647_000) -> str:
    """~647k characters of README words in random order: about 168k cl100k tokens."""
    rng = random.Random(seed)
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:chars]


def long_body(doc: str, question: str | None = None) -> bytes:
    messages = [{"role": "user", "content": doc}]
    if question is not None:
        messages.append({"role": "user", "content": question})
    return json.dumps({"model": "chat", "messages": messages, "max_tokens": 200}).encode()


# ---------------------------------------------------------------- the upstream


def serve_upstream(port: int) -> None:
    import uvloop
    from aiohttp import web

    from serving import serve_until_signalled

    body = json.dumps(COMPLETION).encode()

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    uvloop.run(serve_until_signalled(app, HOST, port))


# ---------------------------------------------------------------- the load


class Load:
    def __init__(self, port: int, long_n: int, seconds: float, rate: float) -> None:
        self.url = f"http://{HOST}:{port}/v1/chat/completions"
        self.long_n, self.seconds, self.rate = long_n, seconds, rate
        self.windows: dict[str, tuple[float, float]] = {}
        self.latency: dict[str, list[float]] = {}
        self.fresh = 0  # never-seen prompts so far
        self.doc = document(0)
        self.template = long_body("@@NONCE@@ " + self.doc)

    async def post(self, session: Any, body: bytes) -> float:
        started = time.perf_counter()
        async with session.post(
            self.url, data=body, headers={"content-type": "application/json"}
        ) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"{response.status}: {(await response.read())[:200]!r}")
        return time.perf_counter() - started

    def new_prompt(self) -> bytes:
        """The prompt with a new first word: a text no cache has seen, counted from scratch.
        (Made by a bytes replace, not a new document: the load must not hold its own loop.)"""
        self.fresh += 1
        return self.template.replace(b"@@NONCE@@", str(self.fresh).encode(), 1)

    async def longs(self, session: Any, name: str, bodies: Any) -> None:
        start = time.time()
        self.latency[name] = [await self.post(session, next(bodies)) for _ in range(self.long_n)]
        self.windows[name] = (start, time.time())

    async def smalls(self, session: Any, name: str, alongside: Any = None) -> None:
        """Open loop: a small request every 1/rate s for `seconds`, whatever the answers do."""
        loop = asyncio.get_running_loop()
        background = asyncio.create_task(alongside()) if alongside else None
        start, begin = time.time(), loop.time()
        tasks = []
        for i in range(int(self.seconds * self.rate)):
            await asyncio.sleep(max(begin + i / self.rate - loop.time(), 0))
            tasks.append(asyncio.create_task(self.post(session, SMALL)))
        self.latency[name] = list(await asyncio.gather(*tasks))
        self.windows[name] = (start, time.time())
        if background:
            background.cancel()
            await asyncio.gather(background, return_exceptions=True)

    async def run(self) -> None:
        import aiohttp

        same = long_body(self.doc)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            for body in (same, long_body(self.doc, "warm-up?"), SMALL, SMALL, same):
                await self.post(session, body)  # warm-up: connections, and the prompt seen
            # turnout does not wait for a new prompt's count (its upstream answers first
            # here): the warm-up prompt's count ends in the background, then it is cached
            await asyncio.sleep(1.0)
            turn = iter(range(10**6))
            await self.longs(session, "long: same prompt", iter(lambda: same, None))
            await self.longs(
                session,
                "long: new turn",
                (
                    long_body(self.doc, f"Question {next(turn)}: what does it say?")
                    for _ in iter(int, 1)
                ),
            )
            await self.longs(session, "long: new prompt", iter(self.new_prompt, None))
            await self.smalls(session, "small")

            async def back_to_back(make: Any) -> None:
                while True:
                    await self.post(session, make())

            await self.smalls(session, "small + long (new)", lambda: back_to_back(self.new_prompt))
            await self.smalls(session, "small + long (same)", lambda: back_to_back(lambda: same))


# ---------------------------------------------------------------- the report


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else float("nan")


def lag_stats(samples: list[list[float]], window: tuple[float, float]) -> tuple[float, ...]:
    lags = [lag for at, lag in samples if window[0] <= at <= window[1]]
    if not lags:
        return (float("nan"),) * 3
    return pct(lags, 0.5) * 1e3, pct(lags, 0.99) * 1e3, max(lags) * 1e3


def gc_stats(collections: list[list[float]], window: tuple[float, float]) -> tuple[int, float]:
    """The collector's passes over 1 ms in the window: how many, and the longest (ms)."""
    took = [s for at, _, s in collections if window[0] <= at <= window[1]]
    return len(took), max(took, default=0.0) * 1e3


def measure(name: str, launch: Launch, port: int, args: argparse.Namespace, tmp: Path) -> dict:
    lag_file = tmp / f"{name}-lag.json"
    launch.env["BENCH_LAG_FILE"] = str(lag_file)
    load = Load(port, args.long, args.seconds, args.rate)
    with running(name, launch, args.cores, port):
        asyncio.run(load.run())
    samples = json.loads(lag_file.read_text()) if lag_file.exists() else []
    gc_file = Path(f"{lag_file}.gc")
    collections = json.loads(gc_file.read_text()) if gc_file.exists() else []
    return {
        phase: {
            "n": len(lat),
            "p50": statistics.median(lat) * 1e3,
            "p99": pct(lat, 0.99) * 1e3,
            "lag": lag_stats(samples, load.windows[phase]),
            "gc": gc_stats(collections, load.windows[phase]),
        }
        for phase, lat in load.latency.items()
    }


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(results: dict[str, dict], before: str, after: str, args: argparse.Namespace) -> str:
    lines = [
        (
            f"Long prompt: {args.long} requests per long phase; small: {args.rate:g}/s for "
            f"{args.seconds:g} s; servers pinned to core(s) {args.cores}, load + upstream on core "
            f"{LOAD_CORE}. Load average before {before}, after {after}."
        ),
        "",
        "| phase | system | n | p50 ms | p99 ms | loop lag p50 / p99 / max ms | GC > 1 ms: n, max |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase in results["floor"]:
        for system, rows in results.items():
            row = rows[phase]
            lag = " / ".join(f"{v:.2f}" for v in row["lag"])
            passes, longest = row["gc"]
            lines.append(
                f"| {phase} | {system} | {row['n']} | {row['p50']:.2f} | {row['p99']:.2f} | {lag} "
                f"| {passes}, {longest:.1f} |"
            )
    lines.append("")
    floor, turnout = results["floor"], results["turnout"]
    for phase in ("long: same prompt", "long: new turn", "long: new prompt"):
        added = turnout[phase]["p50"] - floor[phase]["p50"]
        lines.append(f"- {phase}: turnout adds **{added:+.2f} ms** p50 over the floor")
    for system, rows in results.items():
        alone = rows["small"]["p99"]
        lines.append(
            f"- {system}: small p99 {alone:.2f} ms alone, "
            f"{rows['small + long (new)']['p99']:.2f} ms with new long prompts, "
            f"{rows['small + long (same)']['p99']:.2f} ms with the same long prompt"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", type=int, default=30, help="requests per long phase")
    parser.add_argument("--seconds", type=float, default=8.0, help="per small phase")
    parser.add_argument("--rate", type=float, default=200.0, help="small requests per second")
    parser.add_argument("--quick", action="store_true", help="--long 10 --seconds 3")
    parser.add_argument(
        "--cores",
        default=SERVER_CORE,
        help="the servers' cores (0,1: turnout counts a long "
        "text on 2 threads; the load then shares a core with them)",
    )
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)  # (the upstream's port)
    args = parser.parse_args()
    if args.upstream:
        serve_upstream(args.upstream)
        return
    if args.quick:
        args.long, args.seconds = 10, 3.0
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    OUT.mkdir(exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    before = loadavg()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="turnout-long-") as tmpdir:
        tmp = Path(tmpdir)
        up = free_port()
        upstream = Launch([sys.executable, str(Path(__file__)), "--upstream", str(up)])
        with running("long-upstream", upstream, LOAD_CORE, up):
            port = free_port()
            floor_argv = [sys.executable, str(BENCH / "loop_lag.py"), "--port", str(port)]
            floor = Launch([*floor_argv, "--upstream", f"http://{HOST}:{up}"])
            results["floor"] = measure("long-floor", floor, port, args, tmp)
            config = tmp / "turnout.yaml"
            config.write_text(
                "providers:\n"
                f"  up: {{kind: openai, base_url: 'http://{HOST}:{up}/v1'}}\n"
                "models:\n"
                f"  m: {{provider: up, model: bench-model, context_window: {WINDOW}}}\n"
                "routes:\n  chat: {targets: [m]}\n"
            )
            port = free_port()
            data = tmp / "data"
            data.mkdir()
            env = {
                "TURNOUT_DATA_DIR": str(data),
                "TURNOUT_PLUGINS": "loop_lag",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (os.environ.get("PYTHONPATH"), str(BENCH)) if p
                ),
            }
            argv = [turnout_bin(), "serve", "--config", str(config), "--port", str(port)]
            results["turnout"] = measure("long-turnout", Launch(argv, env=env), port, args, tmp)
    text = report(results, before, loadavg(), args)
    print(text)
    (OUT / "long-prompt.md").write_text(text)


if __name__ == "__main__":
    main()
