"""`turnout serve --workers N`: N gateway processes on one port (SO_REUSEPORT: the kernel
spreads connections), supervised by this one. Health is shared between them through the
configured state backend (Redis); with the in-memory backend each worker learns alone."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType

from turnout.metrics.workers import WorkerMetrics
from turnout.server.reload import SUPERVISOR_PID, WORKERS_DIR

log = logging.getLogger("turnout")

_RESTART_PAUSE = 1.0  # seconds before a crashed worker is started again


def worker_command(argv: list[str]) -> list[str]:
    """This command line, as one worker: --workers dropped, --reuse-port added."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return [sys.executable, "-m", "turnout.cli.main", *out, "--reuse-port"]


def supervise(count: int, argv: list[str]) -> int:
    """Run `count` workers until SIGTERM/SIGINT; restart any that dies on its own. A SIGHUP
    (from the operator, or from a worker asked to reload) goes to every worker."""
    command = worker_command(argv)
    metrics = WorkerMetrics()  # the workers' shared Prometheus files (in their environment)
    with tempfile.TemporaryDirectory(prefix="turnout-workers-") as board:
        # where each worker posts its config version (server/reload.py), and whom a worker
        # asks to have every worker reload
        env = {**os.environ, WORKERS_DIR: board, SUPERVISOR_PID: str(os.getpid())}
        return _run(count, command, env, metrics)


def _run(count: int, command: list[str], env: dict[str, str], metrics: WorkerMetrics) -> int:
    workers = [subprocess.Popen(command, env=env) for _ in range(count)]
    stopping = False

    def forward(signum: int, _: FrameType | None) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        forward(signum, frame)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, forward)
    log.info("turnout supervising %d workers (pids %s)", count, [w.pid for w in workers])
    while not stopping:
        time.sleep(0.2)
        for i, worker in enumerate(workers):
            if worker.poll() is not None and not stopping:
                log.error(
                    "worker %d exited with %s; starting it again", worker.pid, worker.returncode
                )
                metrics.exited(worker.pid)
                time.sleep(_RESTART_PAUSE)
                workers[i] = subprocess.Popen(command, env=env)
    for worker in workers:
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
        metrics.exited(worker.pid)
    return 0
