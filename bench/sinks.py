"""Does a dead event sink slow requests? turnout with and without a dead webhook, side by side.

    python bench/sinks.py                      # 4 rounds of 5 s at c=1 and c=8 (about 3 min)
    python bench/sinks.py --dead refuse        # the webhook refuses connections instead
    python bench/sinks.py --rounds 2 --seconds 3 --conns 8

Both gateways run `bench/turnout-open.yaml` (a dead primary whose breaker opens, then the
nginx upstream), so that every request is a fallback and makes one `fallback` event; one of
them also has a webhook sink (`events: all`) whose receiver is dead: `hang` (default) accepts
connections and never answers, so every delivery waits for its timeout; `refuse` has nothing
listening. Both are up at once, pinned to core 1 like run.py's systems, and loaded in turn
(A B B A each round, wrk on core 0), so drift of the machine hits both alike. The table shows
the medians over rounds; below it, the dead sink's counters from /health, which show that its
events were in fact dropped and counted rather than delivered.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import statistics
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

from run import (
    CONFIG_OPEN,
    HOST,
    LOAD_CORE,
    SERVER_CORE,
    Launch,
    busy_note,
    check_completion,
    free_port,
    nginx_argv,
    nginx_conf,
    port_in_use,
    running,
    server_launch,
    turnout_from,
    upstream_port_from_config,
    upstream_server,
    wrk,
)

HOOK_ENV = "BENCH_DEAD_WEBHOOK"
SYSTEMS = ("no sink", "dead webhook")


@contextlib.contextmanager
def dead_receiver(mode: str) -> Iterator[int]:
    """`hang`: a listening socket nobody accepts from (connections sit in the kernel's
    backlog, requests are never read); `refuse`: a port with nothing listening."""
    if mode == "refuse":
        yield free_port()
        return
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(4096)
        yield listener.getsockname()[1]


def with_dead_sink(tmp: Path) -> Path:
    config = yaml.safe_load(CONFIG_OPEN.read_text())
    config["sinks"] = [
        {
            "kind": "webhook",
            "name": "dead",
            "url": "${" + HOOK_ENV + "}",
            "events": "all",
            "timeout": "2s",
            "retries": 3,
        }
    ]
    path = tmp / "turnout-dead-sink.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def health(port: int) -> dict:
    with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=5) as response:
        return json.loads(response.read())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dead", choices=("hang", "refuse"), default="hang")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--conns", default="1,8", help="wrk connections, comma-separated")
    args = p.parse_args()
    conns = [int(c) for c in args.conns.split(",")]
    upstream = upstream_port_from_config()
    if port_in_use(upstream):  # another benchmark's upstream: its figures would be ours
        raise SystemExit(f"port {upstream} (the bench upstream) is in use: another run?")
    tmp = Path(tempfile.mkdtemp(prefix="turnout-sinks-bench-"))
    tmp.chmod(0o755)
    print(busy_note())
    figures: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    try:
        with contextlib.ExitStack() as stack:
            hook_port = stack.enter_context(dead_receiver(args.dead))
            conf = nginx_conf(tmp, "upstream", upstream, upstream_server(upstream))
            stack.enter_context(running("nginx", Launch(nginx_argv(conf)), LOAD_CORE, upstream))
            turnout = turnout_from(None, tmp)
            ports: dict[str, int] = {}
            for system in SYSTEMS:
                port = free_port()
                launch = server_launch("turnout-open", port, upstream, tmp, turnout)
                if system == "dead webhook":
                    config = str(with_dead_sink(tmp))
                    launch.argv[launch.argv.index("--config") + 1] = config
                    launch.env[HOOK_ENV] = f"http://{HOST}:{hook_port}/services/T0/B0/bench"
                stack.enter_context(
                    running(f"turnout-{system.replace(' ', '-')}", launch, SERVER_CORE, port)
                )
                check_completion(port)
                ports[system] = port
            for c in conns:  # warm-up: the dead primary's breaker opens, pools fill
                for system in SYSTEMS:
                    wrk(ports[system], c, 2.0)
            for _ in range(args.rounds):
                for c in conns:
                    for system in (*SYSTEMS, *reversed(SYSTEMS)):
                        r = wrk(ports[system], c, args.seconds)
                        if r.errors or r.non2xx:
                            raise SystemExit(
                                f"{system} c={c}: {r.errors} errors, {r.non2xx} non-2xx"
                            )
                        figures.setdefault((system, c), []).append((r.rps, r.p50_ms, r.p99_ms))
            sink = health(ports["dead webhook"]).get("sinks", {}).get("dead", {})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nturnout-open, with and without a dead webhook sink ({args.dead}); medians of "
        f"{args.rounds} rounds x 2 runs of {args.seconds:g} s"
    )
    print(f"{'system':<14} {'c':>3} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for c in conns:
        for system in SYSTEMS:
            runs = figures[(system, c)]
            rps, p50, p99 = (statistics.median(x[i] for x in runs) for i in range(3))
            print(f"{system:<14} {c:>3} {rps:>9.0f} {p50:>8.2f} {p99:>8.2f}")
        base = statistics.median(x[0] for x in figures[("no sink", c)])
        dead = statistics.median(x[0] for x in figures[("dead webhook", c)])
        print(f"{'':<14} {c:>3} dead / none req/s: {dead / base:.3f}x")
    print(f"dead sink counters: {sink}")


if __name__ == "__main__":
    main()
