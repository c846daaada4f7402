"""Side-by-side benchmark: direct upstream, nginx, the Python floor proxy, turnout and LiteLLM.

    bash bench/setup.sh            # once: nginx and wrk from Debian, LiteLLM in its own venv
    python bench/run.py --quick    # non-streaming, short runs (about 2 minutes)
    python bench/run.py --stream   # full non-streaming + streaming (about 8 minutes)

Each server runs as one worker pinned to core 1; load (wrk, bench/stream_load.py) and the
upstream run on core 0. The exception is the pair turnout-1w / turnout-2w (1 vs 2 worker
processes): gateway, wrk and upstream all share cores 0-1. Traffic goes only to 127.0.0.1.
Prints one table per part and the headline ratios, and writes them as Markdown to
bench/out/latest.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
LOGS = OUT / "logs"
CONFIG = BENCH / "turnout.yaml"
CONFIG_OPEN = BENCH / "turnout-open.yaml"  # a dead primary, breaker open after warm-up
LUA = BENCH / "chat.lua"
# turnout runs with its ledger (the default, sqlite) and one more event subscriber that counts
# every event (bench/event_counter.py), as a deployment with a metrics exporter would
EVENT_COUNTER = {"TURNOUT_PLUGINS": "event_counter"}
LITELLM_CONFIG = BENCH / "litellm.yaml"
LITELLM_VENV = BENCH / ".venv-litellm"
# local cost map: no download; PRODUCTION: no .env loading (telemetry: --telemetry False)
LITELLM_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MODE": "PRODUCTION"}
# what in LiteLLM's log would mean it tried to reach outside 127.0.0.1
LITELLM_OUTSIDE = re.compile(
    r"model cost map|posthog|telemetry|getaddrinfo|name or service not known|"
    r"temporary failure in name resolution|network is unreachable|api\.openai\.com",
    re.IGNORECASE,
)
LOAD_CORE, SERVER_CORE = "0", "1"
ALTERNATE_SECONDS = 3.0  # each run of the alternating floor/turnout pairs
SHARED_CORES = "0,1"  # the turnout-1w / turnout-2w pair: gateway, load and upstream together
HOST = "127.0.0.1"
SYSTEMS = (
    "direct", "nginx", "floor", "floor-keepalive", "turnout", "turnout-open", "litellm",
    "turnout-1w", "turnout-2w",
)  # fmt: skip
PAIR = ("turnout-1w", "turnout-2w")
STREAM_SYSTEMS = ("direct", "floor", "turnout", "litellm")
SLOW = ("litellm",)  # one run per streaming step, and a longer time limit
BODY = (
    b'{"model": "chat", "messages": [{"role":"system","content":"You are terse."},'
    b'{"role":"user","content":"Say hi."}]}'
)
# what the static nginx upstream answers to POST /v1/chat/completions
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16},
    },
    separators=(",", ":"),
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A system that could not be started or measured; its rows print n/a with this text."""


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    """A server the harness started, in its own process group (killed as a group)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def log_name(self) -> str:
        return str(self.log.relative_to(BENCH.parent))

    def last_line(self) -> str:
        """The log's last line (a traceback's exception), for a short n/a note."""
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1].strip()[:160] if lines else ""

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            try:
                self.popen.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass
class Launch:
    """How to start one server: argv, readiness check, extra environment, client key."""

    argv: list[str]
    path: str = "/health"  # GET path that answers 200 once the server is ready
    env: dict[str, str] = field(default_factory=dict)
    ready_s: float = 30.0
    bearer: str = ""  # sent as `Authorization: Bearer ...` by every client of this system


RUNNING: list[Proc] = []


def start(name: str, argv: list[str], core: str, env: dict[str, str] | None = None) -> Proc:
    """Start argv pinned to `core` (taskset execs, so the pid is the server's own)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{name}.log"
    with log.open("wb") as fh:
        popen = subprocess.Popen(
            ["taskset", "-c", core, *argv],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env} if env else None,
        )
    proc = Proc(name, popen, log)
    RUNNING.append(proc)
    return proc


def stop(proc: Proc) -> None:
    proc.stop()
    if proc in RUNNING:
        RUNNING.remove(proc)


def stop_all() -> None:
    for proc in reversed(RUNNING[:]):
        stop(proc)


@contextlib.contextmanager
def running(name: str, launch: Launch, core: str, port: int) -> Iterator[Proc]:
    proc = start(name, launch.argv, core, launch.env)
    try:
        wait_ready(proc, port, launch.path, launch.ready_s)
        yield proc
    finally:
        stop(proc)
        time.sleep(0.3)  # let sockets and the core settle before the next system


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def request(
    port: int, method: str, path: str, body: bytes | None = None, bearer: str = ""
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(proc: Proc, port: int, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            code = proc.popen.returncode
            raise BenchError(
                f"{proc.name} exited ({code}): {proc.last_line()} (log: {proc.log_name})"
            )
        with contextlib.suppress(OSError, http.client.HTTPException):
            if request(port, "GET", path)[0] == 200:
                return
        time.sleep(0.1)
    raise BenchError(
        f"{proc.name}: GET {path} not 200 within {timeout:.0f}s (log: {proc.log_name})"
    )


def check_completion(port: int, bearer: str = "") -> None:
    """One real request: the system must answer a chat.completion, not an error."""
    try:
        status, body = request(port, "POST", "/v1/chat/completions", BODY, bearer)
    except (OSError, http.client.HTTPException) as exc:
        raise BenchError(f"POST /v1/chat/completions failed: {exc}") from None
    if status != 200 or b'"choices"' not in body:
        raise BenchError(
            f"POST /v1/chat/completions -> {status}: {body[:160].decode(errors='replace')}"
        )


def tree(pid: int) -> list[int]:
    """pid and all its descendants (nginx master + worker, any gateway children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(children.get(p, []))
    return pids


def rss_mb(pid: int) -> float:
    total_kb = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def cpu_seconds(pid: int) -> float:
    ticks = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLK_TCK


# ---------------------------------------------------------------- nginx


def nginx_conf(tmp: Path, name: str, port: int, body: str) -> Path:
    """A private nginx config: one worker, daemon off, own pid/log/temp paths."""
    root = tmp / name
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
{body}
}}
"""
    )
    return conf


def nginx_argv(conf: Path) -> list[str]:
    return [
        nginx_bin(),
        "-p",
        str(conf.parent),
        "-c",
        str(conf),
        "-e",
        str(conf.parent / "error.log"),
    ]


def upstream_server(port: int) -> str:
    assert "'" not in COMPLETION and "$" not in COMPLETION and "\\" not in COMPLETION
    return f"""    server {{
        listen {HOST}:{port} backlog=4096;
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 '{COMPLETION}';
        }}
        location = /health {{ default_type text/plain; return 200 'ok'; }}
    }}"""


def proxy_server(port: int, upstream_port: int) -> str:
    return f"""    upstream up {{ server {HOST}:{upstream_port}; keepalive 128; }}
    server {{
        listen {HOST}:{port} backlog=4096;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


# ---------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    non2xx: int
    wrk_cpu: float = 0.0  # CPU seconds wrk itself used


def wrk(
    port: int, conns: int, seconds: float, bearer: str = "", core: str = LOAD_CORE
) -> WrkResult:
    argv = [
        "taskset", "-c", core, "wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s",
        "--latency", "--timeout", "5s", "-s", str(LUA), f"http://{HOST}:{port}/v1/chat/completions",
    ]  # fmt: skip
    env = {**os.environ, "BENCH_BEARER": bearer}  # chat.lua adds the Authorization header
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk -c{conns} did not finish") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # taskset execs wrk: same child
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise BenchError(f"wrk -c{conns} printed no summary: {(out.stderr or out.stdout)[-300:]}")
    s = json.loads(line.removeprefix("BENCHJSON "))
    non2xx = 0
    for ln in out.stdout.splitlines():  # wrk's own text: "Non-2xx or 3xx responses: N"
        if ln.strip().startswith("Non-2xx or 3xx responses:"):
            non2xx = int(ln.split(":")[1])
    errors = s["connect"] + s["read"] + s["write"] + s["timeout"]
    return WrkResult(
        rps=s["requests"] / (s["duration_us"] / 1e6),
        p50_ms=s["p50_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
        errors=errors,
        non2xx=max(non2xx, s["status"]),
        wrk_cpu=wrk_cpu,
    )


@dataclass
class HttpRow:
    system: str
    runs: dict[int, WrkResult] = field(default_factory=dict)
    rss: float | None = None
    note: str = ""
    # per c: cores in use during the run (CPU s / wall s) by gateway, wrk, upstream, other work
    cores: dict[int, dict[str, float]] = field(default_factory=dict)

    def add_note(self, text: str) -> None:
        if text:
            self.note = f"{self.note}; {text}" if self.note else text


def busy_seconds() -> float:
    """CPU seconds all cores have been busy (anything but idle and iowait) since boot."""
    return sum(total - idle for idle, total in core_times().values()) / CLK_TCK


def measure_http(
    row: HttpRow,
    port: int,
    pid: int,
    conns: list[int],
    args: argparse.Namespace,
    bearer: str = "",
    core: str = LOAD_CORE,
    upstream_pid: int | None = None,
) -> None:
    check_completion(port, bearer)
    wrk(port, 8, args.warmup, bearer, core)  # warm-up: connections, pools, allocator
    for c in conns:
        gw0, up0 = cpu_seconds(pid), cpu_seconds(upstream_pid) if upstream_pid else 0.0
        all0, t0 = busy_seconds(), time.monotonic()
        row.runs[c] = r = wrk(port, c, args.duration, bearer, core)
        wall = time.monotonic() - t0
        used = {
            "gateway": cpu_seconds(pid) - gw0,
            "wrk": r.wrk_cpu,
            "upstream": (cpu_seconds(upstream_pid) - up0) if upstream_pid else 0.0,
        }
        used["other"] = max(0.0, busy_seconds() - all0 - sum(used.values()))
        row.cores[c] = {k: v / wall for k, v in used.items()}
    row.rss = rss_mb(pid)
    bad = {c: r for c, r in row.runs.items() if r.errors or r.non2xx}
    if bad:
        row.add_note(
            "; ".join(
                f"c={c}: {r.non2xx} non-2xx, {r.errors} socket errors" for c, r in bad.items()
            )
        )


def run_http(args: argparse.Namespace, upstream_port: int, tmp: Path) -> list[HttpRow]:
    rows = {system: HttpRow(system) for system in args.systems}
    # the pinned systems first (upstream and wrk on core 0), then the pair on shared cores
    groups = [
        ([s for s in args.systems if s not in PAIR], LOAD_CORE, SERVER_CORE, args.conns),
        # c=1 cannot use a second worker: the pair runs the concurrencies above 1
        ([s for s in args.systems if s in PAIR], SHARED_CORES, SHARED_CORES, args.pair_conns),
    ]
    for systems, load_core, server_core, conns in groups:
        if not systems:
            continue
        name = "upstream" if load_core == LOAD_CORE else "upstream-shared"
        conf = nginx_conf(tmp, name, upstream_port, upstream_server(upstream_port))
        with running(f"nginx-{name}", Launch(nginx_argv(conf)), load_core, upstream_port) as up:
            for system in systems:
                row = rows[system]
                print(f"[http] {system} ...", flush=True)
                try:
                    if system == "direct":
                        measure_http(row, upstream_port, up.pid, conns, args)
                        continue
                    port = free_port()
                    launch = server_launch(system, port, upstream_port, tmp, args.turnout)
                    with running(system, launch, server_core, port) as proc:
                        measure_http(
                            row, port, proc.pid, conns, args, launch.bearer, load_core, up.pid
                        )
                        row.add_note(outside_calls(system, proc))
                    if system in PAIR:
                        row.add_note(cores_note(row))
                except BenchError as exc:
                    row.add_note(str(exc).replace("\n", " "))
                    print(f"  {system}: n/a: {row.note}", flush=True)
    return list(rows.values())


def run_alternating(
    args: argparse.Namespace, upstream_port: int, tmp: Path
) -> dict[str, list[float]]:
    """turnout / floor req/s at c=8, from short runs taken in turn, `--alternate` times (and
    turnout / floor-keepalive when that system is in --systems).

    This machine's speed drifts by 10-20% over seconds to minutes (other tenants of the VM),
    so two 10 s runs taken a minute apart can put the ratio anywhere from 0.5x to 0.65x.
    Runs taken back to back, in turn, see the same machine: their median ratio is the
    figure to quote. All servers stay up, pinned to the same core; only one is loaded."""
    conf = nginx_conf(tmp, "upstream-alt", upstream_port, upstream_server(upstream_port))
    floors = [s for s in ("floor", "floor-keepalive") if s in args.systems]
    ratios: dict[str, list[float]] = {floor: [] for floor in floors}
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            running("nginx-alt", Launch(nginx_argv(conf)), LOAD_CORE, upstream_port)
        )
        ports = {}
        for system in (*floors, "turnout"):
            port = free_port()
            launch = server_launch(system, port, upstream_port, tmp, args.turnout)
            stack.enter_context(running(f"{system}-alt", launch, SERVER_CORE, port))
            wrk(port, 8, args.warmup)
            ports[system] = port
        for _ in range(args.alternate):
            floor_rps = {floor: wrk(ports[floor], 8, ALTERNATE_SECONDS).rps for floor in floors}
            turnout = wrk(ports["turnout"], 8, ALTERNATE_SECONDS)
            for floor, rps in floor_rps.items():
                ratios[floor].append(turnout.rps / rps)
                print(
                    f"  turnout / {floor}: {ratios[floor][-1]:.2f}x "
                    f"({turnout.rps:,.0f} / {rps:,.0f})",
                    flush=True,
                )
    return ratios


def alternating_summary(floor: str, ratios: list[float]) -> str:
    goal = "; goal >= 0.80x" if floor == "floor" else ""
    return (
        f"turnout / {floor} req/s at c=8, {len(ratios)} alternating {ALTERNATE_SECONDS:g} s "
        f"runs each: median {statistics.median(ratios):.2f}x "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}x{goal})"
    )


@dataclass(frozen=True)
class Turnout:
    """How to run turnout: the installed command, or a commit's src/ on PYTHONPATH."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    label: str = "installed"


def cores_note(row: HttpRow) -> str:
    """Where the 2 cores went during the pair's runs: the ratio's ceiling is in there."""
    parts = []
    for c, used in row.cores.items():
        split = ", ".join(f"{k} {v:.2f}" for k, v in used.items())
        parts.append(f"c={c} cores used: {split}")
    return "; ".join(parts) + f" (of {os.cpu_count()}, all shared)"


def turnout_bin() -> str:
    local = Path(sys.executable).parent / "turnout"
    return str(local) if local.exists() else (shutil.which("turnout") or "turnout")


def turnout_from(rev: str | None, tmp: Path) -> Turnout:
    """With --turnout-rev: `git archive REV src` into tmp, run it with this Python. A stable
    build to measure while the work tree is being edited (nothing is installed)."""
    if not rev:
        return Turnout((turnout_bin(),), label=f"installed, {work_tree_state()}")
    code = "import sys; from turnout.cli.main import main; sys.exit(main())"
    if rev.startswith("dir:"):  # a src/ tree as it is (an experiment, or one change alone)
        return Turnout((sys.executable, "-c", code), (("PYTHONPATH", rev[4:]),), rev)
    repo, dest = BENCH.parent, tmp / "turnout-src"
    dest.mkdir()
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", rev],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", sha, "src"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return Turnout((sys.executable, "-c", code), (("PYTHONPATH", str(dest / "src")),), sha)


def work_tree_state() -> str:
    """The commit the work tree is at, and whether src/ differs from it."""
    git = ["git", "-C", str(BENCH.parent)]
    try:
        sha = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "work tree"
    return f"work tree at {sha}" + (" with uncommitted src/ changes" if dirty else "")


@cache
def turnout_has_workers(turnout: Turnout) -> bool:
    """Whether this turnout's `serve` takes --workers N (SO_REUSEPORT worker processes)."""
    try:
        out = subprocess.run(
            [*turnout.argv, "serve", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, **dict(turnout.env)},
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--workers" in out.stdout


def litellm_key() -> str:
    return str(yaml.safe_load(LITELLM_CONFIG.read_text())["general_settings"]["master_key"])


def server_launch(
    system: str, port: int, upstream_port: int, tmp: Path, turnout: Turnout
) -> Launch:
    """How to start one system under test (BenchError if it cannot be run here)."""
    if system == "nginx":
        conf = nginx_conf(tmp, "proxy", port, proxy_server(port, upstream_port))
        return Launch(nginx_argv(conf))
    if system in ("floor", "floor-keepalive"):
        script = str(BENCH / "floor_proxy.py")
        upstream = f"http://{HOST}:{upstream_port}"
        argv = [sys.executable, script, "--port", str(port), "--upstream", upstream]
        client = "keepalive" if system == "floor-keepalive" else "aiohttp"
        return Launch([*argv, "--client", client], env=dict(turnout.env))
    if system in ("turnout", "turnout-open", *PAIR):
        config = CONFIG_OPEN if system == "turnout-open" else CONFIG
        argv = [*turnout.argv, "serve", "--config", str(config), "--port", str(port)]
        # its own data dir (ledger database and the like): not ~/.local/share, not shared
        data = tmp / f"turnout-data-{system}-{port}"
        data.mkdir()
        env = {**dict(turnout.env), "TURNOUT_DATA_DIR": str(data), **EVENT_COUNTER}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(BENCH)) if p)
        if system not in PAIR:
            return Launch(argv, env=env)
        if turnout_has_workers(turnout):  # --workers 1 runs in-process, like `turnout`
            return Launch([*argv, "--workers", "2" if system == "turnout-2w" else "1"], env=env)
        if system == "turnout-2w":
            raise BenchError("`turnout serve` has no --workers option (yet)")
        return Launch(argv, env=env)
    if system == "litellm":
        binary = LITELLM_VENV / "bin" / "litellm"
        if not binary.exists():
            raise BenchError(f"{binary.relative_to(BENCH.parent)} missing: bash bench/setup.sh")
        argv = [
            str(binary), "--config", str(LITELLM_CONFIG), "--host", HOST, "--port", str(port),
            "--num_workers", "1", "--telemetry", "False",
        ]  # fmt: skip
        # it imports for ~10 s before it listens
        return Launch(argv, "/health/liveliness", LITELLM_ENV, 120.0, litellm_key())
    raise ValueError(system)


def outside_calls(system: str, proc: Proc) -> str:
    """For LiteLLM: a note if its log shows an attempt to reach beyond 127.0.0.1."""
    if system != "litellm":
        return ""
    text = proc.log.read_text(errors="replace")
    hits = sorted({m.group(0).lower() for m in LITELLM_OUTSIDE.finditer(text)})
    return f"log mentions {', '.join(hits)}: check {proc.log_name}" if hits else ""


# ---------------------------------------------------------------- streaming


@dataclass
class StreamRow:
    system: str
    streams: int
    spacing_ms: float
    result: dict[str, Any] | None = None
    cpu_per_1k: float | None = None
    rss: float | None = None
    note: str = ""


def stream_load(
    port: int,
    streams: int,
    spacing_ms: float,
    args: argparse.Namespace,
    slow: bool,
    bearer: str,
    chunks: int = 0,
) -> dict[str, Any]:
    """One run of bench/stream_load.py; `chunks` below --chunks asks for shorter streams
    (max_tokens), as the warm-up does."""
    chunks = chunks or args.chunks
    ideal = chunks * spacing_ms / 1000 + args.ramp_ms / 1000
    limit = ideal + (args.slow_limit if slow else 60)
    argv = [
        "taskset", "-c", LOAD_CORE, sys.executable, str(BENCH / "stream_load.py"),
        "--url", f"http://{HOST}:{port}", "--streams", str(streams), "--chunks", str(chunks),
        "--ramp-ms", str(args.ramp_ms), "--timeout", str(limit),
    ]  # fmt: skip
    if chunks < args.chunks:
        argv += ["--max-tokens", str(chunks)]
    env = {**os.environ, "BENCH_BEARER": bearer}
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=limit + 30, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"stream_load {streams} streams did not finish") from None
    if out.returncode != 0 or not out.stdout.strip():
        raise BenchError(f"stream_load failed: {out.stderr[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_stream(
    system: str,
    port: int,
    pid: int,
    steps: list[int],
    spacing_ms: float,
    args: argparse.Namespace,
    bearer: str = "",
) -> list[StreamRow]:
    rows = []
    slow = system in SLOW
    # warm-up and correctness check: 20 short streams (8 chunks, via max_tokens)
    warm = stream_load(port, 20, spacing_ms, args, slow, bearer, min(8, args.chunks))
    if warm["failed"]:
        raise BenchError(f"warm-up streams failed: {warm['errors']}")
    repeat = 1 if slow else args.repeat
    for k in steps:
        print(f"  {k} streams at {spacing_ms:g} ms ...", flush=True)
        row = StreamRow(system, k, spacing_ms)
        rows.append(row)
        cpu0 = cpu_seconds(pid)
        runs = [stream_load(port, k, spacing_ms, args, slow, bearer) for _ in range(repeat)]
        used = cpu_seconds(pid) - cpu0
        chunks = sum(r["chunks"] for r in runs)
        # the repeat with the median p99 gap stands for the step; CPU is over all repeats
        row.result = sorted(runs, key=lambda r: r["gap_p99_ms"])[len(runs) // 2]
        row.cpu_per_1k = used / (chunks / 1000) if chunks else None
        row.rss = rss_mb(pid)
        notes = []
        failed = sum(r["failed"] for r in runs)
        if failed:
            errors = sorted({e for r in runs for e in r["errors"]})[:3]
            notes.append(f"{failed} failed: {'; '.join(errors)}")
        if len(runs) > 1:
            notes.append("p99 of repeats: " + ", ".join(f"{r['gap_p99_ms']:.1f}" for r in runs))
        elif slow and args.repeat > 1:
            notes.append("1 run (slow system)")
        row.note = "; ".join(notes)
    return rows


def run_stream(args: argparse.Namespace, upstream_port: int, tmp: Path) -> list[StreamRow]:
    """One upstream per spacing (it paces the chunks); each system is started once per spacing."""
    rows: list[StreamRow] = []
    systems = [s for s in args.systems if s in STREAM_SYSTEMS]
    for spacing in dict.fromkeys(sp for _, sp in args.steps):
        steps = [k for k, sp in args.steps if sp == spacing]
        up = Launch([
            sys.executable, str(BENCH / "stream_upstream.py"), "--port", str(upstream_port),
            "--chunks", str(args.chunks), "--spacing-ms", str(spacing),
        ])  # fmt: skip
        with running(f"stream-upstream-{spacing:g}ms", up, LOAD_CORE, upstream_port) as upstream:
            for system in systems:
                print(f"[stream {spacing:g} ms] {system} ...", flush=True)
                done = len(rows)
                try:
                    if system == "direct":
                        rows += measure_stream(
                            system, upstream_port, upstream.pid, steps, spacing, args
                        )
                        continue
                    port = free_port()
                    launch = server_launch(system, port, upstream_port, tmp, args.turnout)
                    name = f"{system}-stream-{spacing:g}ms"
                    with running(name, launch, SERVER_CORE, port) as proc:
                        rows += measure_stream(
                            system, port, proc.pid, steps, spacing, args, launch.bearer
                        )
                        if note := outside_calls(system, proc):
                            for row in rows[done:]:
                                row.note = f"{row.note}; {note}" if row.note else note
                except BenchError as exc:
                    note = str(exc).replace("\n", " ")
                    print(f"  {system}: n/a: {note}", flush=True)
                    have = {r.streams for r in rows[done:]}
                    rows += [
                        StreamRow(system, k, spacing, note=note) for k in steps if k not in have
                    ]
    order = {step: i for i, step in enumerate(args.steps)}
    return sorted(rows, key=lambda r: (order[(r.streams, r.spacing_ms)], systems.index(r.system)))


# ---------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ms(value: float) -> str:
    """Latency in ms, with µs resolution below 1 ms."""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def http_table(rows: list[HttpRow], conns: list[int]) -> tuple[list[str], list[list[str]]]:
    header = ["system"]
    for c in conns:
        header += [f"c={c} req/s", f"c={c} p50 / p99 ms"]
    header += ["RSS MB", "note"]
    body = []
    for row in rows:
        cells = [row.system]
        for c in conns:
            r = row.runs.get(c)
            if r is None:  # "—": this system does not run that c (the pair: c=64 only)
                cells += ["—", "—"] if row.runs else ["n/a", "n/a"]
            else:
                cells += [f"{r.rps:,.0f}", f"{ms(r.p50_ms)} / {ms(r.p99_ms)}"]
        cells += [fmt(row.rss, 1), row.note]
        body.append(cells)
    return header, body


def http_summary(rows: list[HttpRow]) -> list[str]:
    by = {r.system: r for r in rows}

    def run(system: str, c: int) -> WrkResult | None:
        row = by.get(system)
        return row.runs.get(c) if row else None

    def ratio(label: str, a: WrkResult | None, b: WrkResult | None, goal: str) -> str:
        if a and b:
            return f"{label}: {a.rps / b.rps:.2f}x ({a.rps:,.0f} vs {b.rps:,.0f}){goal}"
        return f"{label}: n/a"

    lines = []
    floor8, turnout8 = run("floor", 8), run("turnout", 8)
    lines.append(ratio("turnout / floor req/s at c=8", turnout8, floor8, ""))
    if "litellm" in by:
        lines.append(
            ratio("turnout / litellm req/s at c=8", turnout8, run("litellm", 8), " (goal >= 25x)")
        )
    if any(s in by for s in PAIR):
        two, one = run("turnout-2w", 64), run("turnout-1w", 64)
        line = ratio("2 workers / 1 worker req/s at c=64", two, one, " (goal >= 1.7x)")
        if two and one:
            line += "; wrk and upstream share the 2 cores with the workers: a lower bound"
            cores = [
                by[s].cores.get(64, {}).get("gateway", 0.0) for s in ("turnout-2w", "turnout-1w")
            ]
            if all(cores):
                per2, per1 = two.rps / cores[0], one.rps / cores[1]
                line += (
                    f"; per gateway core used: {per2:,.0f} vs {per1:,.0f} req/s "
                    f"({per2 / per1:.2f}x: how well the work itself scales)"
                )
            other = max(by[s].cores.get(64, {}).get("other", 0.0) for s in PAIR)
            if other > 0.1:
                line += f"; NOISY: other work took up to {other:.2f} cores, rerun when idle"
        else:
            reason = (by.get("turnout-2w") or by.get("turnout-1w") or HttpRow("")).note
            line += f" ({reason})" if reason else ""
        lines.append(line)
    turnout1, open1 = run("turnout", 1), run("turnout-open", 1)
    if turnout1 and open1:
        lines.append(
            "added p50 at c=1 while skipping a dead primary (breaker open) over routing "
            f"straight to the fallback: {open1.p50_ms - turnout1.p50_ms:+.3f} ms"
        )
    direct1 = run("direct", 1)
    for system in ("nginx", "floor", "turnout"):
        r = run(system, 1)
        if direct1 and r:
            lines.append(
                f"added p50 over direct at c=1, {system}: +{r.p50_ms - direct1.p50_ms:.3f} ms"
            )
        elif system in by:
            lines.append(f"added p50 over direct at c=1, {system}: n/a")
    return lines


def stream_table(rows: list[StreamRow]) -> tuple[list[str], list[list[str]]]:
    header = [
        "system", "streams", "spacing ms", "gap p50 ms", "gap p99 ms", "+p99 vs direct",
        "gap max ms", "first chunk p50 ms", "wall s", "CPU s / 1k chunks", "RSS MB", "note",
    ]  # fmt: skip
    direct = {
        (r.streams, r.spacing_ms): r.result for r in rows if r.system == "direct" and r.result
    }
    body = []
    for row in rows:
        res = row.result
        step = [row.system, str(row.streams), f"{row.spacing_ms:g}"]
        if res is None:
            body.append([*step, *["n/a"] * 8, row.note])
            continue
        base = direct.get((row.streams, row.spacing_ms))
        added = (
            "—"
            if row.system == "direct"
            else (f"{res['gap_p99_ms'] - base['gap_p99_ms']:+.1f}" if base else "n/a")
        )
        body.append([
            *step, f"{res['gap_p50_ms']:.1f}",
            f"{res['gap_p99_ms']:.1f}", added,
            f"{res['gap_max_ms']:.1f}", f"{res['ttfc_p50_ms']:.1f}", f"{res['wall_s']:.2f}",
            fmt(row.cpu_per_1k, 3), fmt(row.rss, 1), row.note,
        ])  # fmt: skip
    return header, body


def stream_summary(rows: list[StreamRow], steps: list[tuple[int, float]]) -> list[str]:
    """Per step: added p99 gap over direct and CPU per 1k chunks, turnout first."""
    got = {(r.system, r.streams, r.spacing_ms): r for r in rows if r.result}
    lines = []
    for k, spacing in steps:
        direct = got.get(("direct", k, spacing))
        added, cpu = [], []
        for system in ("turnout", "floor", "litellm"):
            row = got.get((system, k, spacing))
            if row is None or row.result is None:
                continue
            if direct and direct.result:
                gap = row.result["gap_p99_ms"] - direct.result["gap_p99_ms"]
                added.append(f"{system} {gap:+.1f}")
            cpu.append(f"{system} {fmt(row.cpu_per_1k, 3)}")
        label = f"{k} streams at {spacing:g} ms"
        lines.append(
            f"{label}: added p99 gap over direct (ms): {', '.join(added) or 'n/a'}; "
            f"CPU s / 1k chunks: {', '.join(cpu) or 'n/a'}"
        )
    return lines


def stream_notes(steps: list[tuple[int, float]]) -> list[str]:
    offered = ", ".join(f"{k} @ {sp:g} ms: {k * 1000 / sp:,.0f} chunks/s" for k, sp in steps)
    ask = (
        "The ask is 100 and 1000 streams at 20 ms. 100 @ 20 ms is measured as asked; "
        "1000 @ 20 ms (20k chunks/s) is not measurable on this machine: the Python load client "
        "shares core 0 with the upstream and saturates near 5-10k chunks/s, so 1000 streams run "
        "at 100 ms (10k chunks/s) as its stand-in."
    )
    reading = (
        "+p99 vs direct is the added inter-chunk latency p99 (direct measured in the same run); "
        "CPU s / 1k chunks is the server's utime+stime per 1000 chunks delivered "
        "(for direct: the upstream's own)."
    )
    return [f"Offered load per step: {offered}.", ask, reading]


def print_table(title: str, header: list[str], body: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(x) for x in col) for col in zip(header, *body, strict=False)]
        print(f"\n{title}")
        for cells in [header, *body]:
            print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)))
        return
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(header):
        table.add_column(
            name,
            justify="left" if i == 0 or name == "note" else "right",
            overflow="fold",
            max_width=40 if name == "note" else None,
        )
    for cells in body:
        table.add_row(*cells)
    Console(width=max(160, shutil.get_terminal_size().columns)).print(table)


def markdown(header: list[str], body: list[list[str]]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in cells) + " |" for cells in body]
    return "\n".join(lines)


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "?"


def environment() -> str:
    import aiohttp

    nginx = tool_version([nginx_bin(), "-v"]).replace("nginx version: ", "")
    wrk_v = tool_version(["wrk", "-v"]).split(" [")[0]
    litellm = "litellm not installed"
    python = LITELLM_VENV / "bin" / "python"
    if python.exists():
        code = "import importlib.metadata as m; print(m.version('litellm'))"
        litellm = "litellm " + tool_version([str(python), "-c", code])
    return (
        f"{platform.node()} · {os.cpu_count()} cores · Linux {platform.release()} · "
        f"Python {platform.python_version()} · aiohttp {aiohttp.__version__} · {nginx} · {wrk_v}"
        f" · {litellm}"
    )


# ---------------------------------------------------------------- main


def parse_steps(text: str) -> list[tuple[int, float]]:
    """'100@20,1000@100' -> [(100, 20.0), (1000, 100.0)]: concurrent streams @ spacing ms."""
    steps = []
    for part in text.split(","):
        k, _, spacing = part.strip().partition("@")
        steps.append((int(k), float(spacing or 100)))
    return steps


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="turnout side-by-side benchmark (see bench/README.md)")
    p.add_argument("--quick", action="store_true", help="3 s wrk runs, 1 s warm-up, 1 stream run")
    p.add_argument("--stream", action="store_true", help="also run the streaming part")
    p.add_argument("--only", choices=["http", "stream"], help="run just one part")
    p.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma list of {','.join(SYSTEMS)} (default: all)",
    )
    p.add_argument("--duration", type=float, help="seconds per wrk run (default 10, quick 3)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up load (default 3, quick 1)")
    p.add_argument("--conns", default="1,8,64", help="wrk concurrencies (default 1,8,64)")
    p.add_argument(
        "--pair-conns", default="64", help="wrk concurrencies for turnout-1w/-2w (default 64)"
    )
    p.add_argument(
        "--steps",
        default="100@20,1000@100",
        help="streaming steps, concurrent streams@chunk spacing ms (default 100@20,1000@100)",
    )
    p.add_argument("--chunks", type=int, default=64, help="chunks per stream (default 64)")
    p.add_argument(
        "--ramp-ms", type=float, default=1000.0, help="spread stream starts over (default 1000)"
    )
    p.add_argument(
        "--repeat", type=int, help="runs per stream step, median p99 (default 3, quick 1)"
    )
    p.add_argument(
        "--alternate",
        type=int,
        help="floor/turnout pairs of short c=8 runs taken in turn for the ratio "
        "(default 5, quick 3; 0 skips them)",
    )
    p.add_argument(
        "--turnout-rev",
        help="measure turnout as of this git commit (git archive of src/ on PYTHONPATH) "
        "instead of the installed one, e.g. HEAD while the work tree is being edited; "
        "dir:PATH runs a src/ tree as it is",
    )
    p.add_argument(
        "--slow-limit",
        type=float,
        default=150.0,
        help="litellm: seconds a stream may take beyond the ideal (default 150)",
    )
    args = p.parse_args()
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems: {', '.join(sorted(unknown))}")
    args.conns = [int(c) for c in args.conns.split(",")]
    args.pair_conns = [int(c) for c in args.pair_conns.split(",")]
    try:
        args.steps = parse_steps(args.steps)
    except ValueError:
        p.error(f"--steps: expected e.g. 100@20,1000@100, got {args.steps!r}")
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup or (1.0 if args.quick else 3.0)
    args.repeat = max(1, args.repeat or (1 if args.quick else 3))
    if args.alternate is None:
        args.alternate = 3 if args.quick else 5
    args.do_http = args.only != "stream"
    args.do_stream = args.only == "stream" or (args.stream and args.only != "http")
    return args


def preflight(args: argparse.Namespace, upstream_port: int) -> None:
    missing = [tool for tool in ("taskset",) if not shutil.which(tool)]
    if args.do_http:
        missing += [t for t in ("wrk",) if not shutil.which(t)]
        if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
            missing.append("nginx")
    if missing:
        sys.exit(
            f"missing: {', '.join(missing)}. Install with: bash bench/setup.sh "
            "(apt-get update && apt-get install -y nginx wrk)"
        )
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs 2 cores: servers are pinned to core 1, load and upstream to core 0")
    if port_in_use(upstream_port):
        sys.exit(f"port {upstream_port} (the upstream in {CONFIG.name}) is already in use")


def upstream_port_from_config() -> int:
    base_url = yaml.safe_load(CONFIG.read_text())["providers"]["up"]["base_url"]
    parts = urlsplit(base_url)
    if parts.hostname != HOST or parts.port is None:
        sys.exit(f"{CONFIG}: providers.up.base_url must be http://{HOST}:PORT/v1")
    return parts.port


def core_times() -> dict[str, tuple[int, int]]:
    """Per core from /proc/stat: (idle + iowait, total) jiffies."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(v) for v in values]
            times[name] = (ticks[3] + ticks[4], sum(ticks[:8]))
    return times


def busy_note(sample: float = 1.0) -> str:
    """How busy the cores are with other work (sampled while none of ours runs): other work on
    the two cores skews every figure."""
    before = core_times()
    time.sleep(sample)
    after = core_times()
    busy = []
    for name, (idle1, total1) in after.items():
        idle0, total0 = before.get(name, (idle1, total1))
        total = max(1, total1 - total0)
        busy.append(100 * (1 - (idle1 - idle0) / total))
    note = "cores busy with other work: " + " / ".join(f"{b:.0f}%" for b in busy)
    return note + (" (noisy: expect p99 spikes, rerun when idle)" if max(busy) > 10 else "")


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    args = parse_args()
    upstream_port = upstream_port_from_config()
    preflight(args, upstream_port)
    signal.signal(signal.SIGTERM, _terminate)
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    started = dt.datetime.now().astimezone()
    sections: list[str] = []
    before = busy_note()
    print(f"start: {before}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="turnout-bench-"))
    tmp.chmod(0o755)  # nginx workers may run as nobody
    http_rows: list[HttpRow] = []
    alternating: dict[str, list[float]] = {}
    stream_rows: list[StreamRow] = []
    try:
        try:
            args.turnout = turnout_from(args.turnout_rev, tmp)
        except subprocess.CalledProcessError as exc:
            sys.exit(f"--turnout-rev {args.turnout_rev}: {exc.stderr.decode(errors='replace')}")
        if args.do_http:
            http_rows = run_http(args, upstream_port, tmp)
            if args.alternate and {"floor", "turnout"} <= set(args.systems):
                print("[http] floor and turnout, alternating ...", flush=True)
                alternating = run_alternating(args, upstream_port, tmp)
        if args.do_stream:
            stream_rows = run_stream(args, upstream_port, tmp)
    except KeyboardInterrupt:
        print("interrupted: stopping servers", file=sys.stderr)
        return 130
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    if http_rows:
        title = (
            f"Non-streaming: wrk -t1 -d{args.duration:g}s, POST 2-message chat completion, "
            "nginx static upstream"
        )
        header, body = http_table(http_rows, sorted({*args.conns, *args.pair_conns}))
        print_table(title, header, body)
        summary = http_summary(http_rows)
        for at, (floor, ratios) in enumerate(alternating.items(), 1):
            summary.insert(at, alternating_summary(floor, ratios))
        print("\n".join(summary))
        sections += ["", f"## {title}", "", markdown(header, body), ""]
        sections += [f"- {line}" for line in summary]
    if stream_rows:
        title = (
            f"Streaming: {args.chunks} chunks per stream, starts spread over {args.ramp_ms:g} ms, "
            f"median of {args.repeat} runs by p99"
            f"{' (litellm: 1 run)' if 'litellm' in args.systems else ''}; "
            "upstream and load client on core 0"
        )
        header, body = stream_table(stream_rows)
        print_table(title, header, body)
        summary = stream_summary(stream_rows, args.steps)
        print("\n".join(summary))
        notes = stream_notes(args.steps)
        print("\n".join(notes))
        sections += ["", f"## {title}", "", markdown(header, body), ""]
        sections += [f"- {line}" for line in summary] + [""] + notes
    after = busy_note()
    print(f"end: {after}")
    setup = f"Servers: one worker on core {SERVER_CORE}; load and upstream on core {LOAD_CORE}"
    if any(r.system in PAIR for r in http_rows):
        setup += f" (turnout-1w / turnout-2w: gateway, wrk and upstream on cores {SHARED_CORES})"
    setup += f". turnout: {args.turnout.label}."
    sections[:0] = [
        f"# turnout benchmark, {started:%Y-%m-%d %H:%M %Z}",
        "",
        f"`{command.strip()}` · {environment()}",
        "",
        f"{setup} Start: {before}; end: {after}.",
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "latest.md").write_text("\n".join(sections) + "\n")
    print(f"\nwrote {OUT / 'latest.md'} (server logs in {LOGS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
