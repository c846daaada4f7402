"""Side-by-side benchmark: direct upstream, nginx, the Python floor proxy and turnout.

    bash bench/setup.sh            # once: nginx and wrk from Debian
    python bench/run.py --quick    # non-streaming, short runs (about 1 minute)
    python bench/run.py --stream   # full non-streaming + streaming (about 4 minutes)

Each server runs as one worker pinned to core 1; load (wrk, bench/stream_load.py) and the
upstream run on core 0. Traffic goes only to 127.0.0.1. Prints one table per part, the
turnout/floor ratios, and writes the tables as Markdown to bench/out/latest.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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
LOAD_CORE, SERVER_CORE = "0", "1"
HOST = "127.0.0.1"
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


RUNNING: list[Proc] = []


def start(name: str, argv: list[str], core: str) -> Proc:
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
def running(
    name: str, argv: list[str], core: str, port: int, path: str = "/health"
) -> Iterator[Proc]:
    proc = start(name, argv, core)
    try:
        wait_ready(proc, port, path)
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


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
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


def check_completion(port: int) -> None:
    """One real request: the system must answer a chat.completion, not an error."""
    try:
        status, body = request(port, "POST", "/v1/chat/completions", BODY)
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


def wrk(port: int, conns: int, seconds: float) -> WrkResult:
    argv = [
        "taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s",
        "--latency", "--timeout", "5s", "-s", str(LUA), f"http://{HOST}:{port}/v1/chat/completions",
    ]  # fmt: skip
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk -c{conns} did not finish") from None
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
    )


@dataclass
class HttpRow:
    system: str
    runs: dict[int, WrkResult] = field(default_factory=dict)
    rss: float | None = None
    note: str = ""


def measure_http(
    row: HttpRow, port: int, pid: int, conns: list[int], seconds: float, warm: float
) -> None:
    check_completion(port)
    wrk(port, 8, warm)  # warm-up: connections, pools, caches, JIT-free but allocator-warm
    for c in conns:
        row.runs[c] = wrk(port, c, seconds)
    row.rss = rss_mb(pid)
    bad = {c: r for c, r in row.runs.items() if r.errors or r.non2xx}
    if bad:
        row.note = "; ".join(
            f"c={c}: {r.non2xx} non-2xx, {r.errors} socket errors" for c, r in bad.items()
        )


def run_http(args: argparse.Namespace, upstream_port: int, tmp: Path) -> list[HttpRow]:
    rows: list[HttpRow] = []
    seconds, warm = args.duration, args.warmup
    upstream = nginx_conf(tmp, "upstream", upstream_port, upstream_server(upstream_port))
    with running("nginx-upstream", nginx_argv(upstream), LOAD_CORE, upstream_port) as up:
        for system in args.systems:
            row = HttpRow(system)
            rows.append(row)
            print(f"[http] {system} ...", flush=True)
            try:
                if system == "direct":
                    measure_http(row, upstream_port, up.pid, args.conns, seconds, warm)
                    continue
                port = free_port()
                argv, path = server_argv(system, port, upstream_port, tmp)
                with running(system, argv, SERVER_CORE, port, path) as proc:
                    measure_http(row, port, proc.pid, args.conns, seconds, warm)
            except BenchError as exc:
                row.note = str(exc).replace("\n", " ")
                print(f"  {system}: n/a: {row.note}", flush=True)
    return rows


def turnout_bin() -> str:
    local = Path(sys.executable).parent / "turnout"
    return str(local) if local.exists() else (shutil.which("turnout") or "turnout")


def server_argv(system: str, port: int, upstream_port: int, tmp: Path) -> tuple[list[str], str]:
    """argv of one system under test and its readiness path."""
    if system == "nginx":
        conf = nginx_conf(tmp, "proxy", port, proxy_server(port, upstream_port))
        return nginx_argv(conf), "/health"
    if system == "floor":
        script = str(BENCH / "floor_proxy.py")
        return [
            sys.executable,
            script,
            "--port",
            str(port),
            "--upstream",
            f"http://{HOST}:{upstream_port}",
        ], "/health"
    if system in ("turnout", "turnout-open"):
        config = CONFIG if system == "turnout" else CONFIG_OPEN
        return [turnout_bin(), "serve", "--config", str(config), "--port", str(port)], "/health"
    raise ValueError(system)


# ---------------------------------------------------------------- streaming


@dataclass
class StreamRow:
    system: str
    streams: int
    result: dict[str, Any] | None = None
    cpu_per_1k: float | None = None
    rss: float | None = None
    note: str = ""


def stream_load(port: int, streams: int, args: argparse.Namespace) -> dict[str, Any]:
    limit = args.chunks * args.spacing_ms / 1000 + args.ramp_ms / 1000 + 60
    argv = [
        "taskset", "-c", LOAD_CORE, sys.executable, str(BENCH / "stream_load.py"),
        "--url", f"http://{HOST}:{port}", "--streams", str(streams), "--chunks", str(args.chunks),
        "--ramp-ms", str(args.ramp_ms), "--timeout", str(limit),
    ]  # fmt: skip
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=limit + 30, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"stream_load {streams} streams did not finish") from None
    if out.returncode != 0 or not out.stdout.strip():
        raise BenchError(f"stream_load failed: {out.stderr[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_stream(system: str, port: int, pid: int, args: argparse.Namespace) -> list[StreamRow]:
    rows = []
    warm = stream_load(port, 20, args)  # warm-up, and a correctness check
    if warm["failed"]:
        raise BenchError(f"warm-up streams failed: {warm['errors']}")
    for k in args.streams:
        row = StreamRow(system, k)
        rows.append(row)
        cpu0 = cpu_seconds(pid)
        runs = [stream_load(port, k, args) for _ in range(args.repeat)]
        used = cpu_seconds(pid) - cpu0
        chunks = sum(r["chunks"] for r in runs)
        # the repeat with the median p99 gap stands for the step; CPU is over all repeats
        row.result = sorted(runs, key=lambda r: r["gap_p99_ms"])[len(runs) // 2]
        row.cpu_per_1k = used / (chunks / 1000) if chunks else None
        row.rss = rss_mb(pid)
        failed = sum(r["failed"] for r in runs)
        if failed:
            errors = sorted({e for r in runs for e in r["errors"]})[:3]
            row.note = f"{failed} failed: {'; '.join(errors)}"
        if len(runs) > 1:
            p99s = ", ".join(f"{r['gap_p99_ms']:.1f}" for r in runs)
            row.note = (row.note + "; " if row.note else "") + f"p99 of repeats: {p99s}"
    return rows


def run_stream(args: argparse.Namespace, upstream_port: int, tmp: Path) -> list[StreamRow]:
    rows: list[StreamRow] = []
    up_argv = [
        sys.executable, str(BENCH / "stream_upstream.py"), "--port", str(upstream_port),
        "--chunks", str(args.chunks), "--spacing-ms", str(args.spacing_ms),
    ]  # fmt: skip
    with running("stream-upstream", up_argv, LOAD_CORE, upstream_port) as up:
        for system in [s for s in args.systems if s in ("direct", "floor", "turnout")]:
            print(f"[stream] {system} ...", flush=True)
            try:
                if system == "direct":
                    rows += measure_stream(system, upstream_port, up.pid, args)
                    continue
                port = free_port()
                argv, path = server_argv(system, port, upstream_port, tmp)
                with running(f"{system}-stream", argv, SERVER_CORE, port, path) as proc:
                    rows += measure_stream(system, port, proc.pid, args)
            except BenchError as exc:
                note = str(exc).replace("\n", " ")
                print(f"  {system}: n/a: {note}", flush=True)
                done = {r.streams for r in rows if r.system == system}
                rows += [StreamRow(system, k, note=note) for k in args.streams if k not in done]
    return rows


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
            cells += (
                ["n/a", "n/a"]
                if r is None
                else [f"{r.rps:,.0f}", f"{ms(r.p50_ms)} / {ms(r.p99_ms)}"]
            )
        cells += [fmt(row.rss, 1), row.note]
        body.append(cells)
    return header, body


def http_summary(rows: list[HttpRow]) -> list[str]:
    by = {r.system: r for r in rows}

    def run(system: str, c: int) -> WrkResult | None:
        row = by.get(system)
        return row.runs.get(c) if row else None

    lines = []
    floor8, turnout8 = run("floor", 8), run("turnout", 8)
    if floor8 and turnout8:
        lines.append(
            f"turnout / floor req/s at c=8: {turnout8.rps / floor8.rps:.2f}x "
            f"({turnout8.rps:,.0f} vs {floor8.rps:,.0f})"
        )
    else:
        lines.append("turnout / floor req/s at c=8: n/a")
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
        "system", "streams", "gap p50 ms", "gap p99 ms", "+p99 vs direct", "gap max ms",
        "first chunk p50 ms", "wall s", "CPU s / 1k chunks", "RSS MB", "note",
    ]  # fmt: skip
    direct = {r.streams: r.result for r in rows if r.system == "direct" and r.result}
    body = []
    for row in rows:
        res = row.result
        if res is None:
            body.append([row.system, str(row.streams), *["n/a"] * 8, row.note])
            continue
        base = direct.get(row.streams)
        added = (
            "—"
            if row.system == "direct"
            else (f"{res['gap_p99_ms'] - base['gap_p99_ms']:+.1f}" if base else "n/a")
        )
        body.append([
            row.system, str(row.streams), f"{res['gap_p50_ms']:.1f}",
            f"{res['gap_p99_ms']:.1f}", added,
            f"{res['gap_max_ms']:.1f}", f"{res['ttfc_p50_ms']:.1f}", f"{res['wall_s']:.2f}",
            fmt(row.cpu_per_1k, 3), fmt(row.rss, 1), row.note,
        ])  # fmt: skip
    return header, body


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
    return (
        f"{platform.node()} · {os.cpu_count()} cores · Linux {platform.release()} · "
        f"Python {platform.python_version()} · aiohttp {aiohttp.__version__} · {nginx} · {wrk_v}"
    )


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="turnout side-by-side benchmark (see bench/README.md)")
    p.add_argument("--quick", action="store_true", help="3 s wrk runs, 1 s warm-up")
    p.add_argument("--stream", action="store_true", help="also run the streaming part")
    p.add_argument("--only", choices=["http", "stream"], help="run just one part")
    p.add_argument(
        "--systems",
        default="direct,nginx,floor,turnout,turnout-open",
        help="comma list of direct,nginx,floor,turnout,turnout-open (default: all)",
    )
    p.add_argument("--duration", type=float, help="seconds per wrk run (default 10, quick 3)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up load (default 3, quick 1)")
    p.add_argument("--conns", default="1,8,64", help="wrk concurrencies (default 1,8,64)")
    p.add_argument("--streams", default="100,1000", help="concurrent streams (default 100,1000)")
    p.add_argument("--chunks", type=int, default=32, help="chunks per stream (default 32)")
    p.add_argument("--spacing-ms", type=float, default=100.0, help="chunk spacing (default 100)")
    p.add_argument(
        "--ramp-ms", type=float, default=1000.0, help="spread stream starts over (default 1000)"
    )
    p.add_argument(
        "--repeat", type=int, help="runs per stream step, median p99 (default 3, quick 1)"
    )
    args = p.parse_args()
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - {"direct", "nginx", "floor", "turnout", "turnout-open"}
    if unknown:
        p.error(f"unknown systems: {', '.join(sorted(unknown))}")
    args.conns = [int(c) for c in args.conns.split(",")]
    args.streams = [int(k) for k in args.streams.split(",")]
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup or (1.0 if args.quick else 3.0)
    args.repeat = max(1, args.repeat or (1 if args.quick else 3))
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
    stream_rows: list[StreamRow] = []
    try:
        if args.do_http:
            http_rows = run_http(args, upstream_port, tmp)
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
        header, body = http_table(http_rows, args.conns)
        print_table(title, header, body)
        summary = http_summary(http_rows)
        print("\n".join(summary))
        sections += ["", f"## {title}", "", markdown(header, body), ""]
        sections += [f"- {line}" for line in summary]
    if stream_rows:
        title = (
            f"Streaming: {args.chunks} chunks at {args.spacing_ms:g} ms spacing, starts spread "
            f"over {args.ramp_ms:g} ms, median of {args.repeat} runs by p99; "
            "upstream and load client on core 0"
        )
        header, body = stream_table(stream_rows)
        print_table(title, header, body)
        note = (
            "CPU s / 1k chunks is the server's utime+stime (for direct: the upstream's). "
            "Gaps above ~5-10k chunks/s measure the load client too: compare with direct."
        )
        print(note)
        sections += ["", f"## {title}", "", markdown(header, body), "", note]
    after = busy_note()
    print(f"end: {after}")
    setup = f"Servers: one worker on core {SERVER_CORE}; load and upstream on core {LOAD_CORE}."
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
