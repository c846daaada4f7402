"""A response-cache hit against the Python floor's pass-through (issue 19).

Every request wrk sends is the same chat completion, so on a route with `cache: {mode:
exact}` all but the first are hits: turnout answers from its cache without an upstream call.
Measured side by side in one run, each server pinned to core 1 (wrk and the upstream on
core 0), as bench/run.py does:

- floor: bench/floor_proxy.py, the least a Python gateway does, passing through to the
  static nginx upstream;
- turnout-cached: `turnout serve` with the route cached (in-memory backend): every request
  after the first is a hit, no upstream involved;
- turnout: the same route without the cache (each request goes upstream), for reference.

    python bench/cache_hit.py                   # c=1 and c=8, 5 s each (about 1 minute)
    python bench/cache_hit.py --conns 1,8,64 --duration 10

The figure to quote is the hit's p50 at c=1 against the floor's: what a hit adds (or saves)
against the cheapest possible pass-through. Needs nginx and wrk (bash bench/setup.sh).
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import yaml

from run import (
    BENCH,
    BODY,
    HOST,
    LOAD_CORE,
    SERVER_CORE,
    BenchError,
    HttpRow,
    Launch,
    free_port,
    measure_http,
    nginx_argv,
    nginx_conf,
    running,
    stop_all,
    turnout_bin,
    upstream_server,
)

SYSTEMS = ("floor", "turnout-cached", "turnout")


def turnout_config(tmp: Path, upstream_port: int, cached: bool) -> Path:
    route: dict[str, object] = {"targets": ["m"]}
    if cached:
        route["cache"] = {"mode": "exact", "ttl": "1h"}
    config = {
        "server": {"host": HOST},
        "providers": {"up": {"kind": "openai", "base_url": f"http://{HOST}:{upstream_port}/v1"}},
        "models": {"m": {"provider": "up", "model": "bench-model", "price": {"input": 0.1}}},
        "routes": {"chat": route},
    }
    path = tmp / f"turnout-{'cached' if cached else 'live'}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(system: str, port: int, upstream_port: int, tmp: Path) -> Launch:
    if system == "floor":
        script = str(BENCH / "floor_proxy.py")
        upstream = f"http://{HOST}:{upstream_port}"
        return Launch([sys.executable, script, "--port", str(port), "--upstream", upstream])
    config = turnout_config(tmp, upstream_port, cached=system == "turnout-cached")
    data = tmp / f"data-{system}"
    data.mkdir(exist_ok=True)
    argv = [turnout_bin(), "serve", "--config", str(config), "--port", str(port)]
    return Launch(argv, env={"TURNOUT_DATA_DIR": str(data)})


def cache_header(port: int) -> str:
    """x-turnout-cache of one request (the warm-up made it a hit)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("POST", "/v1/chat/completions", BODY, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.getheader("x-turnout-cache") or "-"
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", default="1,8", help="wrk connections per step (1,8)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per step")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up at c=8")
    args = parser.parse_args()
    conns = [int(c) for c in args.conns.split(",")]
    options = SimpleNamespace(duration=args.duration, warmup=args.warmup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="turnout-bench-cache-"))
    tmp.chmod(0o755)  # nginx workers may run as nobody
    rows: list[HttpRow] = []
    try:
        upstream_port = free_port()
        conf = nginx_conf(tmp, "upstream", upstream_port, upstream_server(upstream_port))
        with running("upstream", Launch(nginx_argv(conf)), LOAD_CORE, upstream_port) as up:
            for system in SYSTEMS:
                row = HttpRow(system)
                rows.append(row)
                port = free_port()
                print(f"[cache] {system} ...", flush=True)
                try:
                    with running(
                        system, launch(system, port, upstream_port, tmp), SERVER_CORE, port
                    ) as proc:
                        measure_http(row, port, proc.pid, conns, options, upstream_pid=up.pid)
                        if system != "floor":
                            row.add_note(f"x-turnout-cache: {cache_header(port)}")
                except BenchError as exc:
                    row.add_note(f"n/a: {exc}")
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print_rows(rows, conns)
    return 0


def print_rows(rows: list[HttpRow], conns: list[int]) -> None:
    floor = next((r for r in rows if r.system == "floor"), None)
    print("\nwrk -t1, one identical chat completion per request (all hits when cached)")
    print(f"{'system':<16}{'c':>4}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p50 vs floor':>14}")
    for row in rows:
        for c in conns:
            run = row.runs.get(c)
            if run is None:
                continue
            base = floor.runs.get(c) if floor is not None else None
            delta = f"{run.p50_ms - base.p50_ms:+.3f} ms" if base is not None else "-"
            print(
                f"{row.system:<16}{c:>4}{run.rps:>10.0f}{run.p50_ms:>9.3f}{run.p99_ms:>9.3f}"
                f"{delta:>14}"
            )
        if row.note:
            print(f"  {row.system}: {row.note}")


if __name__ == "__main__":
    sys.exit(main())
