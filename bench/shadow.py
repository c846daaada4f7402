"""Does a shadow rollout slow the client? turnout with and without a shadow candidate, side by
side in one run.

    python bench/shadow.py                      # 4 rounds of 5 s at c=1 and c=8 (about 3 min)
    python bench/shadow.py --rounds 2 --seconds 3 --conns 1

Both gateways run bench/turnout.yaml (route `chat` -> model `m` on the nginx upstream); one of
them also has a shadow rollout on the route (`share: 100`, a second model on the same
upstream), so every request is answered and then copied to the candidate in the background.
Both are up at once, pinned to core 1 like run.py's systems, and loaded in turn (A B B A each
round, the load on core 0). Two loads:

- **paced** (the client's latency): requests sent open-loop at `--rate` per second, well
  under what one core serves, each timed from when it was due (no coordinated omission).
  The copy starts after the answer and runs between requests: the client should not see it.
- **wrk c=8** (the cost): closed-loop at full speed. The copy is a second upstream call made
  by the same process on the same core, so req/s falls by about what a copy costs.

Below the tables: the shadow's own figures (pairs, spend).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import urllib.request
from pathlib import Path

import aiohttp
import yaml

from run import (
    BODY,
    CONFIG,
    HOST,
    LOAD_CORE,
    SERVER_CORE,
    Launch,
    busy_note,
    check_completion,
    free_port,
    nginx_argv,
    nginx_conf,
    running,
    server_launch,
    turnout_from,
    upstream_port_from_config,
    upstream_server,
    wrk,
)

SYSTEMS = ("no shadow", "shadow 100%")


def with_shadow(tmp: Path) -> Path:
    config = yaml.safe_load(CONFIG.read_text())
    config["models"]["candidate"] = {
        "provider": "up",
        "model": "bench-model",
        "price": {"input": 0.05, "output": 0.1},
    }
    config["routes"]["chat"]["rollout"] = {
        "candidate": "candidate",
        "mode": "shadow",
        "share": 100,
        "daily_cap_usd": 1000,
    }
    path = tmp / "turnout-shadow.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def _paced(port: int, rate: float, seconds: float) -> list[float]:
    """Latencies (ms) of requests sent at `rate` per second, each from when it was due."""
    url = f"http://{HOST}:{port}/v1/chat/completions"
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def one(due: float) -> None:
            async with session.post(url, data=BODY, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"paced load: status {response.status}")
            latencies.append((loop.time() - due) * 1000)

        start, tasks = loop.time() + 0.05, []
        for i in range(int(rate * seconds)):
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
    return latencies


def paced(port: int, rate: float, seconds: float) -> tuple[float, float, float]:
    values = sorted(asyncio.run(_paced(port, rate, seconds)))
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]
    return pick(0.50), pick(0.95), pick(0.99)


def rollouts(port: int) -> list[dict]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/admin/rollouts", timeout=5) as response:
        return json.loads(response.read())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--conns", default="8", help="wrk connections, comma-separated")
    p.add_argument("--rate", type=float, default=300.0, help="paced load, requests per second")
    args = p.parse_args()
    conns = [int(c) for c in args.conns.split(",")]
    upstream = upstream_port_from_config()
    tmp = Path(tempfile.mkdtemp(prefix="turnout-shadow-bench-"))
    tmp.chmod(0o755)
    print(busy_note())
    figures: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    try:
        with contextlib.ExitStack() as stack:
            conf = nginx_conf(tmp, "upstream", upstream, upstream_server(upstream))
            stack.enter_context(running("nginx", Launch(nginx_argv(conf)), LOAD_CORE, upstream))
            turnout = turnout_from(None, tmp)
            ports: dict[str, int] = {}
            for system in SYSTEMS:
                port = free_port()
                launch = server_launch("turnout", port, upstream, tmp, turnout)
                if system != "no shadow":
                    config = str(with_shadow(tmp))
                    launch.argv[launch.argv.index("--config") + 1] = config
                name = f"turnout-{system.replace(' ', '-').replace('%', '')}"
                stack.enter_context(running(name, launch, SERVER_CORE, port))
                check_completion(port)
                ports[system] = port
            for c in conns:  # warm-up: pools fill
                for system in SYSTEMS:
                    wrk(ports[system], c, 2.0)
            os.sched_setaffinity(0, {int(LOAD_CORE)})  # the paced client, beside wrk's core
            for _ in range(args.rounds):
                for system in (*SYSTEMS, *reversed(SYSTEMS)):
                    figures.setdefault((system, 0), []).append(
                        (args.rate, *paced(ports[system], args.rate, args.seconds))
                    )
                for c in conns:
                    for system in (*SYSTEMS, *reversed(SYSTEMS)):
                        r = wrk(ports[system], c, args.seconds)
                        if r.errors or r.non2xx:
                            raise SystemExit(
                                f"{system} c={c}: {r.errors} errors, {r.non2xx} non-2xx"
                            )
                        figures.setdefault((system, c), []).append((r.rps, r.p50_ms, r.p99_ms))
            (shadow,) = rollouts(ports["shadow 100%"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nturnout with and without a shadow candidate on every request; medians of "
        f"{args.rounds} rounds x 2 runs of {args.seconds:g} s"
    )
    print(f"paced, {args.rate:g} req/s: latency from when each request was due")
    print(f"{'system':<12} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for system in SYSTEMS:
        runs = figures[(system, 0)]
        p50, p95, p99 = (statistics.median(x[i] for x in runs) for i in (1, 2, 3))
        print(f"{system:<12} {p50:>8.3f} {p95:>8.3f} {p99:>8.3f}")
    print("\nwrk, closed loop at full speed")
    print(f"{'system':<12} {'c':>3} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for c in conns:
        for system in SYSTEMS:
            runs = figures[(system, c)]
            rps, p50, p99 = (statistics.median(x[i] for x in runs) for i in range(3))
            print(f"{system:<12} {c:>3} {rps:>9.0f} {p50:>8.3f} {p99:>8.3f}")
        base = [statistics.median(x[i] for x in figures[("no shadow", c)]) for i in range(3)]
        on = [statistics.median(x[i] for x in figures[("shadow 100%", c)]) for i in range(3)]
        print(
            f"{'':<12} {c:>3} shadow / none: req/s {on[0] / base[0]:.3f}x,"
            f" p50 {on[1] / base[1]:.3f}x, p99 {on[2] / base[2]:.3f}x"
        )
    report = shadow.get("shadow", {})
    print(
        f"shadow: {report.get('pairs')} pairs, spent {report.get('spent_today_usd')} USD,"
        f" flags {report.get('flags')}"
    )


if __name__ == "__main__":
    main()
