"""A response-cache hit, exact and semantic, against the Python floor's pass-through (issue 19).

Every request wrk sends is the same chat completion, so on a route with `cache: {mode:
exact}` all but the first are hits: turnout answers from its cache without an upstream call.
Measured side by side in one run, each server pinned to core 1 (wrk, the upstream and the
embeddings simulator on core 0), as bench/run.py does:

- floor: bench/floor_proxy.py, the least a Python gateway does, passing through to the
  static nginx upstream;
- turnout-cached: `turnout serve` with the route cached (in-memory backend): every request
  after the first is a hit, no upstream involved;
- turnout-semantic: the route in semantic mode, primed with a paraphrase of wrk's question
  ("Please say hi." for "Say hi."): every request is a semantic hit, `similar(0.79)`: its
  last message embedded through the gateway's embeddings route (`turnout sim`'s hashed
  vectors, an HTTP call to it on core 0, and its own ledger row), the context's vectors
  searched, the paraphrase's answer served. wrk's own question is never stored (a semantic
  hit stores nothing), so it stays a semantic hit, never an exact one;
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
import time
from pathlib import Path
from types import SimpleNamespace

import orjson
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

SYSTEMS = ("floor", "turnout-cached", "turnout-semantic", "turnout")
MODES = {"turnout-cached": "exact", "turnout-semantic": "semantic"}  # system -> cache mode
PARAPHRASE = "Please say hi."  # of BODY's "Say hi.": 0.79 similar by the simulator's vectors


def turnout_config(tmp: Path, upstream_port: int, sim_port: int, mode: str | None) -> Path:
    route: dict[str, object] = {"targets": ["m"]}
    providers = {"up": {"kind": "openai", "base_url": f"http://{HOST}:{upstream_port}/v1"}}
    models: dict[str, object] = {
        "m": {"provider": "up", "model": "bench-model", "price": {"input": 0.1}}
    }
    routes: dict[str, object] = {"chat": route}
    if mode == "exact":
        route["cache"] = {"mode": "exact", "ttl": "1h"}
    elif mode == "semantic":
        route["cache"] = {"mode": "semantic", "embed_route": "embed", "threshold": 0.75}
        providers["sim"] = {"kind": "openai", "base_url": f"http://{HOST}:{sim_port}/v1"}
        models["embedder"] = {"provider": "sim", "supports": ["embeddings"]}
        routes["embed"] = {"targets": ["embedder"]}
    config = {"server": {"host": HOST}, "providers": providers, "models": models, "routes": routes}
    path = tmp / f"turnout-{mode or 'live'}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(system: str, port: int, upstream_port: int, sim_port: int, tmp: Path) -> Launch:
    if system == "floor":
        script = str(BENCH / "floor_proxy.py")
        upstream = f"http://{HOST}:{upstream_port}"
        return Launch([sys.executable, script, "--port", str(port), "--upstream", upstream])
    config = turnout_config(tmp, upstream_port, sim_port, MODES.get(system))
    data = tmp / f"data-{system}"
    data.mkdir(exist_ok=True)
    argv = [turnout_bin(), "serve", "--config", str(config), "--port", str(port)]
    return Launch(argv, env={"TURNOUT_DATA_DIR": str(data)})


def cache_header(port: int, body: bytes = BODY, no_store: bool = False) -> str:
    """x-turnout-cache of one request (the warm-up made it a hit)."""
    headers = {"Content-Type": "application/json"}
    if no_store:
        headers["Cache-Control"] = "no-store"
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("POST", "/v1/chat/completions", body, headers)
        response = conn.getresponse()
        response.read()
        return response.getheader("x-turnout-cache") or "-"
    finally:
        conn.close()


def prime_semantic(port: int) -> None:
    """Store the paraphrase's answer, and wait until wrk's question finds it (a store is in
    the background); no-store, so that the check itself leaves nothing behind."""
    paraphrase = BODY.replace(b'"Say hi."', orjson.dumps(PARAPHRASE))
    assert paraphrase != BODY
    cache_header(port, paraphrase)
    deadline = time.monotonic() + 10
    while not cache_header(port, no_store=True).startswith("similar("):
        if time.monotonic() > deadline:
            raise BenchError("the semantic cache never found the paraphrase")
        time.sleep(0.1)


def sim_config(tmp: Path) -> str:
    """The simulator's config: one embeddings model, answering at once."""
    path = tmp / "sim.yaml"
    path.write_text(yaml.safe_dump({"models": {"embedder": {"ttft": 0}}}))
    return str(path)


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
        sim_port = free_port()
        sim = Launch(
            [turnout_bin(), "sim", "--port", str(sim_port), "--config", sim_config(tmp)],
            path="/v1/models",
        )
        with (
            running("upstream", Launch(nginx_argv(conf)), LOAD_CORE, upstream_port) as up,
            running("embeddings-sim", sim, LOAD_CORE, sim_port),
        ):
            for system in SYSTEMS:
                row = HttpRow(system)
                rows.append(row)
                port = free_port()
                print(f"[cache] {system} ...", flush=True)
                try:
                    argv = launch(system, port, upstream_port, sim_port, tmp)
                    with running(system, argv, SERVER_CORE, port) as proc:
                        if system == "turnout-semantic":
                            prime_semantic(port)
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
    print("(cores: CPU in use during the run; `other` includes the embeddings simulator)")
    for row in rows:
        for c in conns:
            run = row.runs.get(c)
            if run is None:
                continue
            base = floor.runs.get(c) if floor is not None else None
            delta = f"{run.p50_ms - base.p50_ms:+.3f} ms" if base is not None else "-"
            used = row.cores.get(c, {})
            busy = " ".join(f"{k} {v:.2f}" for k, v in used.items())
            print(
                f"{row.system:<16}{c:>4}{run.rps:>10.0f}{run.p50_ms:>9.3f}{run.p99_ms:>9.3f}"
                f"{delta:>14}  cores: {busy}"
            )
        if row.note:
            print(f"  {row.system}: {row.note}")


if __name__ == "__main__":
    sys.exit(main())
