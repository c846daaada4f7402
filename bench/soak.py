"""Chaos soak: a real `turnout serve` (one worker) in front of two `turnout sim` processes, under
several minutes of scheduled faults (outages, connection refused, 429 storms, hangs, dropped
streams, broken JSON, every target down), a SIGHUP and a graceful restart, driven by the
official openai and anthropic SDKs (streaming and not, some aborting on purpose).

    python bench/soak.py                 # 5 minutes (bench/README.md, "Chaos soak")
    python bench/soak.py --minutes 1     # smoke

Reports requests by kind; client-visible failures while a target was healthy (must be 0),
apart from those while no target was healthy; ledger rows against requests (exactly one
each); the gateway's RSS over time. Printed, and written to bench/out/soak-latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from run import (
    LOGS,
    OUT,
    BenchError,
    Proc,
    Turnout,
    free_port,
    rss_mb,
    start,
    stop,
    stop_all,
    turnout_from,
    wait_ready,
    work_tree_state,
)
from soak_clients import KINDS, Clients, Result, client_loop, monotonic_clock
from soak_report import failure_summary, ledger_check, read_ledger, rss_summary
from soak_schedule import (
    BASE,
    MAX_OPEN_FOR_S,
    OPEN_FOR_S,
    PROBE_INTERVAL_S,
    ROUTES,
    SIM_A_MODELS,
    SIM_B_MODELS,
    Action,
    Phase,
    as_json,
    build,
    describe,
)

HOST = "127.0.0.1"
GATEWAY_CORE, LOAD_CORE = "1", "0"  # as bench/run.py: the server on core 1, the rest on 0
ANTHROPIC_KEY = "sk-ant-soak-0123456789abcdef"  # the sim accepts any key; never a real one
DRAIN_S = 60.0  # how long a SIGTERMed gateway may take to drain and exit
SRC = Path(__file__).resolve().parent.parent / "src"


def turnout_build(rev: str | None, run_dir: Path) -> Turnout:
    """The turnout every process of the run uses: a commit's src/ (--turnout-rev), else a copy
    of the work tree's src/ taken at the start, so that a restart runs the same code even
    while the tree is being edited."""
    if rev:
        return turnout_from(rev, run_dir)
    dest = run_dir / "turnout-src"
    shutil.copytree(SRC, dest / "src", ignore=shutil.ignore_patterns("__pycache__"))
    code = "import sys; from turnout.cli.main import main; sys.exit(main())"
    label = f"{work_tree_state()} (src/ copied at the start)"
    return Turnout((sys.executable, "-c", code), (("PYTHONPATH", str(dest / "src")),), label)


def gateway_config(port_a: int, port_b: int) -> dict[str, Any]:
    supports = ["json"]
    return {
        "providers": {
            "sim-a": {"kind": "openai", "base_url": f"http://{HOST}:{port_a}/v1"},
            "sim-b": {"kind": "openai", "base_url": f"http://{HOST}:{port_b}/v1"},
            "sim-b-anthropic": {
                "kind": "anthropic",
                "base_url": f"http://{HOST}:{port_b}",
                "api_key": "${SOAK_ANTHROPIC_KEY}",
            },
        },
        "models": {
            "alpha": {"provider": "sim-a", "supports": supports},
            "beta": {"provider": "sim-b", "supports": supports},
            "claude": {"provider": "sim-b-anthropic", "supports": supports},
            "tortoise": {"provider": "sim-b"},
        },
        "routes": {
            "chat": {
                "targets": list(ROUTES["chat"]),
                "timeout": {"connect": "1s", "ttft": "1s", "total": "4s"},
                # streamed JSON answers are validated too, so broken JSON fails over
                "guard": {"buffer_streams": True},
            },
            "slow": {"targets": list(ROUTES["slow"]), "timeout": {"ttft": "10s", "total": "20s"}},
        },
        "health": {
            "breaker": {"open_for": f"{OPEN_FOR_S:g}s", "max_open_for": f"{MAX_OPEN_FOR_S:g}s"},
            "probe_interval": f"{PROBE_INTERVAL_S:g}s",
        },
        "log_level": "warning",
    }


@dataclass
class Soak:
    """The processes of one run and what happened to them."""

    run_dir: Path
    minutes: float
    phases: list[Phase]
    actions: list[Action]
    turnout: Turnout
    port_a: int = field(default_factory=free_port)
    port_b: int = field(default_factory=free_port)
    port: int = field(default_factory=free_port)
    sim_a: Proc | None = None
    sim_b: Proc | None = None
    gateway: Proc | None = None
    generation: int = 0  # gateway processes started so far
    expected_down: bool = False  # we stopped the gateway ourselves
    down_windows: list[tuple[float, float, str]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    rss: list[tuple[float, int, float]] = field(default_factory=list)
    sim_a_stats: list[dict[str, Any]] = field(default_factory=list)  # before each sim A stop
    # when each phase's faults began and finished being applied (one model after the other)
    applied: list[tuple[float, float]] = field(default_factory=list)
    clock: Any = None

    def phases_as_run(self) -> list[Phase]:
        """The schedule as it ran: a phase starts when its faults began to be applied and the
        one before it ends when they all were, so a request in between is judged against both
        (the stricter wins). Failures are judged against these, not the planned times."""
        planned = [(p.start, p.start) for p in self.phases[len(self.applied) :]]
        spans = [*self.applied, *planned]
        ends = [done for _, done in spans[1:]] + [self.phases[-1].end]
        return [
            dataclasses.replace(p, start=begun, end=max(begun, end))
            for p, (begun, _), end in zip(self.phases, spans, ends, strict=True)
        ]

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    def event(self, kind: str, **details: Any) -> None:
        t = round(self.clock(), 2) if self.clock else 0.0
        self.events.append({"t_s": t, "event": kind, **details})
        print(f"[{t:7.1f}s] {kind} {json.dumps(details) if details else ''}", flush=True)

    # --- processes ------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return dict(self.turnout.env)

    def start_sim(self, name: str, models: tuple[str, ...], port: int) -> Proc:
        path = self.run_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"seed": 11, "models": {m: BASE[m] for m in models}}))
        argv = [*self.turnout.argv, "sim", "--config", str(path), "--host", HOST]
        proc = start(f"soak-{name}", [*argv, "--port", str(port)], LOAD_CORE, self.env())
        wait_ready(proc, port, "/sim/stats")
        return proc

    def start_gateway(self) -> Proc:
        self.generation += 1
        config = self.run_dir / "turnout.yaml"
        config.write_text(yaml.safe_dump(gateway_config(self.port_a, self.port_b)))
        argv = [*self.turnout.argv, "serve", "--config", str(config)]
        env = {"TURNOUT_DATA_DIR": str(self.data_dir), "SOAK_ANTHROPIC_KEY": ANTHROPIC_KEY}
        env |= self.env()
        name = f"soak-gateway-{self.generation}"
        proc = start(name, [*argv, "--port", str(self.port)], GATEWAY_CORE, env)
        wait_ready(proc, self.port, "/health", 60.0)
        self.gateway = proc
        return proc

    def stop_gateway(self) -> dict[str, Any]:
        """SIGTERM and wait: the gateway drains in-flight requests and its ledger queue."""
        proc = self.gateway
        assert proc is not None
        t0 = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        try:
            code = proc.popen.wait(DRAIN_S)
        except subprocess.TimeoutExpired:  # a gateway that does not exit is a finding: kill it
            stop(proc)
            code = None
        return {"pid": proc.pid, "exit_code": code, "exit_s": round(time.monotonic() - t0, 2)}

    # --- the schedule ---------------------------------------------------------------------

    async def apply(self, phase: Phase, http: aiohttp.ClientSession) -> None:
        for models, port in ((SIM_A_MODELS, self.port_a), (SIM_B_MODELS, self.port_b)):
            if port == self.port_a and phase.sim_a_down:
                continue
            for model in models:
                url = f"http://{HOST}:{port}/sim/models/{model}"
                async with http.post(url, json=phase.behaviour(model)) as response:
                    if response.status != 200:
                        raise BenchError(f"sim rejected {model}: {await response.text()}")

    async def sim_stats(self, port: int, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(f"http://{HOST}:{port}/sim/stats") as response:
            return await response.json()

    async def set_sim_a(self, up: bool, http: aiohttp.ClientSession) -> None:
        if not up and self.sim_a is not None:
            self.sim_a_stats.append(await self.sim_stats(self.port_a, http))
            await asyncio.to_thread(stop, self.sim_a)
            self.sim_a = None
            self.event("sim A stopped (connection refused)")
        elif up and self.sim_a is None:
            self.sim_a = await asyncio.to_thread(self.start_sim, "sim-a", SIM_A_MODELS, self.port_a)
            self.event("sim A started")

    async def run_schedule(self, http: aiohttp.ClientSession) -> None:
        pending = sorted(self.actions, key=lambda a: a.at)
        for phase in self.phases:
            await self.sleep_until(phase.start, pending)
            begun = self.clock()
            await self.set_sim_a(not phase.sim_a_down, http)
            await self.apply(phase, http)
            self.applied.append((begun, self.clock()))
            self.event("phase", name=phase.name, what=phase.what)
        await self.sleep_until(self.phases[-1].end, pending)

    async def sleep_until(self, t: float, pending: list[Action]) -> None:
        while pending and pending[0].at <= t:
            action = pending.pop(0)
            await asyncio.sleep(max(0.0, action.at - self.clock()))
            await (self.restart() if action.kind == "restart" else self.sighup())
        await asyncio.sleep(max(0.0, t - self.clock()))

    async def restart(self) -> None:
        self.expected_down = True
        t0 = self.clock()
        stopped = await asyncio.to_thread(self.stop_gateway)
        proc = await asyncio.to_thread(self.start_gateway)
        self.down_windows.append((t0, self.clock(), "graceful restart"))
        self.expected_down = False
        self.event("graceful restart", stopped=stopped, new_pid=proc.pid)

    async def sighup(self) -> None:
        assert self.gateway is not None
        pid = self.gateway.pid
        t0 = self.clock()
        self.expected_down = True  # the watchdog must not race us if it dies
        self.gateway.popen.send_signal(signal.SIGHUP)
        await asyncio.sleep(2.0)
        code = self.gateway.popen.poll()
        if code is None:
            self.expected_down = False
            self.event("SIGHUP", pid=pid, survived=True)
            return
        self.event("SIGHUP", pid=pid, survived=False, exit_code=code)
        await asyncio.to_thread(self.start_gateway)
        self.down_windows.append((t0, self.clock(), "died on SIGHUP"))
        self.expected_down = False

    # --- watching -------------------------------------------------------------------------

    async def watch(self, stop_at: float, every_s: float) -> None:
        """Sample the gateway's RSS; restart it (and say so) if it dies on its own."""
        while self.clock() < stop_at:
            proc = self.gateway
            if proc is not None and not self.expected_down:
                code = proc.popen.poll()
                if code is not None:
                    t0 = self.clock()
                    self.event("gateway died", pid=proc.pid, exit_code=code)
                    self.expected_down = True
                    await asyncio.to_thread(self.start_gateway)
                    self.down_windows.append((t0, self.clock(), "died"))
                    self.expected_down = False
                else:
                    with contextlib.suppress(OSError):
                        self.rss.append((round(self.clock(), 2), proc.pid, rss_mb(proc.pid)))
            await asyncio.sleep(every_s)


async def drive(soak: Soak, args: argparse.Namespace) -> list[Result]:
    start_at = time.monotonic()
    soak.clock = monotonic_clock(start_at)
    stop_at = soak.phases[-1].end
    results: list[Result] = []
    clients = Clients(f"http://{HOST}:{soak.port}", args.seed)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        loops = [
            asyncio.create_task(client_loop(clients, stop_at, soak.clock, results, args.think))
            for _ in range(args.concurrency)
        ]
        watcher = asyncio.create_task(soak.watch(stop_at, args.rss_every))
        try:
            await soak.run_schedule(http)
            await asyncio.wait_for(asyncio.gather(*loops), timeout=DRAIN_S)
        finally:
            for task in (*loops, watcher):
                task.cancel()
            await asyncio.gather(*loops, watcher, return_exceptions=True)
            await clients.close()
        b_stats = await soak.sim_stats(soak.port_b, http)
        a_stats = [await soak.sim_stats(soak.port_a, http)] if soak.sim_a else []
    soak.event("clients done", requests=len(results))
    soak.sim_a_stats += a_stats
    soak.events.append({"sim_stats": {"sim-a": soak.sim_a_stats, "sim-b": b_stats}})
    return results


def injected(stats: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """Faults and statuses the sims report, summed over sim A's lives."""
    total: dict[str, Counter[str]] = {}
    for per_model in stats:
        for model, s in per_model.items():
            counter = total.setdefault(model, Counter())
            counter["requests"] += s.get("requests", 0)
            for fault, n in s.get("faults", {}).items():
                counter[f"fault {fault}"] += n
            for status, n in s.get("statuses", {}).items():
                counter[f"status {status}"] += n
    return total


def log_findings(generations: int) -> dict[str, Any]:
    """Tracebacks and ERROR lines in the gateway logs."""
    found: dict[str, Any] = {}
    for g in range(1, generations + 1):
        path = LOGS / f"soak-gateway-{g}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        errors = [ln for ln in lines if " ERROR " in ln or ln.startswith("ERROR")]
        warnings = [ln for ln in lines if "WARNING" in ln]
        found[path.name] = {
            "tracebacks": sum("Traceback (most recent call last)" in ln for ln in lines),
            "error_lines": len(errors),
            "warning_lines": len(warnings),
            "first_errors": sorted({e[-200:] for e in errors})[:5],
            "first_warnings": sorted({w[-200:] for w in warnings})[:5],
        }
    return found


def summarise(soak: Soak, results: list[Result], args: argparse.Namespace) -> dict[str, Any]:
    rows = read_ledger(soak.data_dir / "turnout.db")
    phases = soak.phases_as_run()
    failures = failure_summary(results, phases, soak.down_windows)
    healthy_failures = failures.get("target-healthy", {}).get("count", 0)
    ledger = ledger_check(results, rows)
    rss = rss_summary(soak.rss, args.warmup)
    flat = abs(rss.get("slope_mb_per_min", 99.0)) <= args.flat_mb_per_min
    sim_stats = next(e["sim_stats"] for e in soak.events if "sim_stats" in e)
    faults = injected([*sim_stats["sim-a"], sim_stats["sim-b"]])
    by_kind = {kind: dict(Counter(r.state for r in results if r.kind == kind)) for kind in KINDS}
    return {
        "command": "python bench/soak.py " + " ".join(sys.argv[1:]),
        "started": args.started,
        "machine": f"{platform.node()} · {os.cpu_count()} cores · Python "
        f"{platform.python_version()} · shared with other work (throughput not meaningful)",
        "turnout": soak.turnout.label,
        "minutes": soak.minutes,
        "concurrency": args.concurrency,
        "schedule": as_json(soak.phases, soak.actions),
        "schedule_as_run": as_json(phases, []),
        "events": [e for e in soak.events if "sim_stats" not in e],
        "gateway_down_windows": [
            {"from_s": round(a, 2), "to_s": round(b, 2), "why": why}
            for a, b, why in soak.down_windows
        ],
        "requests": len(results),
        "requests_by_kind": by_kind,
        "requests_by_state": dict(Counter(r.state for r in results)),
        "failures": failures,
        "client_visible_failures_while_a_target_was_healthy": healthy_failures,
        "ledger": ledger,
        "rss_samples": soak.rss,
        "rss_after_warmup": rss | {"flat": flat, "flat_threshold_mb_per_min": args.flat_mb_per_min},
        "injected_by_sims": {m: dict(c) for m, c in sorted(faults.items())},
        "gateway_logs": log_findings(soak.generation),
        "verdict": {
            "zero_failures_while_healthy": healthy_failures == 0,
            "exactly_one_ledger_row_per_request": ledger["exactly_one_row_each"],
            "rss_flat_after_warmup": flat,
        },
    }


def print_report(report: dict[str, Any]) -> None:
    print("\n=== chaos soak ===")
    print(f"requests: {report['requests']}  by state: {report['requests_by_state']}")
    for kind, states in report["requests_by_kind"].items():
        print(f"  {kind:<28} {states}")
    print("failures by class:")
    for name, f in report["failures"].items():
        print(f"  {name:<26} {f['count']:>6}  phases {f['by_phase']}")
        for example in f["examples"][:3]:
            print(f"      e.g. {example['kind']} t={example['t0']:.1f}s: {example['error'][:150]}")
    print(
        "client-visible failures while a target was healthy: "
        f"{report['client_visible_failures_while_a_target_was_healthy']}"
    )
    ledger = report["ledger"]
    print(
        f"ledger: {ledger['rows']} rows, {ledger['requests_reached']} requests reached the gateway;"
        f" without row {ledger['requests_without_row']}, rows without request "
        f"{ledger['rows_without_request']}, two rows {ledger['requests_with_two_rows']}"
    )
    for kind, outcomes in ledger["row_status_outcome_by_kind"].items():
        print(f"  {kind:<28} {outcomes}")
    rss = report["rss_after_warmup"]
    print(
        f"RSS after warm-up ({rss.get('warmup_s')} s of pid {rss.get('pid')}): "
        f"min {rss.get('min_mb')} max {rss.get('max_mb')} MB, slope "
        f"{rss.get('slope_mb_per_min')} MB/min over {rss.get('span_s')} s (last half "
        f"{rss.get('slope_last_half_mb_per_min')} MB/min)"
    )
    for name, logs in report["gateway_logs"].items():
        print(f"  {name}: {logs['tracebacks']} tracebacks, {logs['error_lines']} ERROR lines")
    print(f"verdict: {report['verdict']}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="turnout chaos soak (see bench/README.md)")
    p.add_argument("--minutes", type=float, default=5.0, help="length of the run (default 5)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--think", type=float, default=0.02, help="s between a client's requests")
    p.add_argument("--seed", type=int, default=7, help="the clients' mix of request kinds")
    p.add_argument("--rss-every", type=float, default=2.0, help="s between RSS samples")
    p.add_argument("--warmup", type=float, default=60.0, help="s of a process's RSS warm-up")
    p.add_argument("--flat-mb-per-min", type=float, default=0.5, help="|RSS slope| counted as flat")
    p.add_argument(
        "--turnout-rev",
        help="run turnout as of this git commit (default: a copy of the work tree's src/)",
    )
    return p.parse_args()


def main() -> int:
    args = parse_args()
    started = dt.datetime.now().astimezone()
    args.started = started.isoformat(timespec="seconds")
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {int(LOAD_CORE)})  # the clients share core 0 with the sims
    phases, actions = build(args.minutes)
    run_dir = OUT / f"soak-{started:%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True)
    try:
        turnout = turnout_build(args.turnout_rev, run_dir)
    except subprocess.CalledProcessError as exc:
        sys.exit(f"--turnout-rev {args.turnout_rev}: {exc.stderr.decode(errors='replace')}")
    print(f"turnout: {turnout.label}")
    soak = Soak(run_dir, args.minutes, phases, actions, turnout)
    print("schedule (seconds from the start):")
    print("\n".join(describe(phases, actions)), flush=True)
    try:
        soak.sim_a = soak.start_sim("sim-a", SIM_A_MODELS, soak.port_a)
        soak.sim_b = soak.start_sim("sim-b", SIM_B_MODELS, soak.port_b)
        soak.start_gateway()
        results = asyncio.run(drive(soak, args))
        soak.event("final shutdown", **soak.stop_gateway())
    except (BenchError, KeyboardInterrupt) as exc:
        print(f"soak aborted: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all()
    report = summarise(soak, results, args)
    print_report(report)
    text = json.dumps(report, indent=1, default=str)
    (run_dir / "report.json").write_text(text)
    with (run_dir / "requests.jsonl").open("w") as fh:  # every request, for a closer look
        fh.writelines(json.dumps(r.as_dict()) + "\n" for r in results)
    (OUT / "soak-latest.json").write_text(text)
    print(f"\nwrote {OUT / 'soak-latest.json'} (run directory {run_dir}, logs in {LOGS})")
    return 0 if all(report["verdict"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
