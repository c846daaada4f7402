"""What the Prometheus metrics cost a request: turnout with metrics and without, side by side.

    python bench/metrics_cost.py                    # 4 rounds of 5 s at c=8 (about a minute)
    python bench/metrics_cost.py --rounds 6 --seconds 5
    python bench/metrics_cost.py --control          # both sides on: the method's noise floor

The work tree's src/ (copied at the start) serves four times at once, pinned to core 1, in
compare.py's A B B A order: `on` is bench/turnout.yaml as it is (metrics are on by default:
the inline subscriber counting every request), `off` the same config with
`metrics: {enabled: false}`. Each copy is under its own `wrk -c8` on core 0, all in the same
moments, so a slow moment of the machine slows both alike. Printed per round and as medians:
requests/s of on / off (the inverse ratio of their CPU per request), and each side's CPU per
request in microseconds (utime + stime of the server over the round / its requests), whose
difference is what the subscriber adds. Nothing is scraped during the run: a scrape's cost is
Prometheus' interval, not the request path's.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from compare import build, loaded_at_once
from run import (
    BENCH,
    CONFIG,
    EVENT_COUNTER,
    LOAD_CORE,
    SERVER_CORE,
    Launch,
    cpu_seconds,
    free_port,
    nginx_argv,
    nginx_conf,
    running,
    upstream_port_from_config,
    upstream_server,
)

ORDER = ("on", "off", "off2", "on2")  # A B B A: starting first is worth a little


def launches(tmp: Path, control: bool) -> dict[str, tuple[Launch, int]]:
    """Each copy's launch and port: the same src/, the config with and without metrics
    (`control`: metrics on for both sides, the method's own noise floor)."""
    turnout = build("WORKTREE", tmp / "src-copy")
    config = yaml.safe_load(CONFIG.read_text())
    off = tmp / "turnout-metrics-off.yaml"
    off.write_text(yaml.safe_dump({**config, "metrics": {"enabled": False}}))
    out = {}
    for name in ORDER:
        port = free_port()
        data = tmp / f"data-{name}"
        data.mkdir()
        path = off if name.startswith("off") and not control else CONFIG
        argv = [*turnout.argv, "serve", "--config", str(path), "--port", str(port)]
        env = {**dict(turnout.env), "TURNOUT_DATA_DIR": str(data), **EVENT_COUNTER}
        env["PYTHONPATH"] = ":".join(p for p in (env.get("PYTHONPATH"), str(BENCH)) if p)
        out[name] = (Launch(argv, env=env), port)
    return out


def one_round(ports: dict[str, int], pids: dict[str, int], seconds: float) -> dict[str, tuple]:
    """(requests/s, CPU µs per request) of each copy, all under wrk c=8 at the same time."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    rps = loaded_at_once(ports, seconds)
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    return {name: (rps[name], used[name] / (rps[name] * seconds) * 1e6) for name in ports}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument(
        "--control", action="store_true", help="metrics on for both sides: the noise floor"
    )
    args = p.parse_args()
    upstream = upstream_port_from_config()
    tmp = Path(tempfile.mkdtemp(prefix="turnout-metrics-cost-"))
    tmp.chmod(0o755)
    rows: list[dict[str, tuple]] = []
    try:
        with contextlib.ExitStack() as stack:
            conf = nginx_conf(tmp, "upstream", upstream, upstream_server(upstream))
            stack.enter_context(running("nginx", Launch(nginx_argv(conf)), LOAD_CORE, upstream))
            ports, pids = {}, {}
            for name, (launch, port) in launches(tmp, args.control).items():
                proc = stack.enter_context(running(f"turnout-{name}", launch, SERVER_CORE, port))
                ports[name], pids[name] = port, proc.pid
            for round_ in range(-1, args.rounds):  # round -1 warms up
                result = one_round(ports, pids, args.seconds if round_ >= 0 else 2.0)
                if round_ >= 0:
                    rows.append(result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratios, added = [], []
    print("round  req/s on  req/s off  on/off   µs/req on  µs/req off")
    for i, r in enumerate(rows):
        on_rps, off_rps = r["on"][0] + r["on2"][0], r["off"][0] + r["off2"][0]
        on_us = (r["on"][1] + r["on2"][1]) / 2
        off_us = (r["off"][1] + r["off2"][1]) / 2
        ratios.append(on_rps / off_rps)
        added.append(on_us - off_us)
        print(
            f"{i:>5}  {on_rps:>8.0f}  {off_rps:>9.0f}  {on_rps / off_rps:>6.3f}"
            f"  {on_us:>10.1f}  {off_us:>10.1f}"
        )
    print(
        f"metrics on / off requests/s at c=8 (same core, same moments): median"
        f" {statistics.median(ratios):.3f}x; CPU added per request: median"
        f" {statistics.median(added):+.1f} µs"
    )


if __name__ == "__main__":
    sys.exit(main())
