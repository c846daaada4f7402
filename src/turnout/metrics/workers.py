"""The supervisor's side of metrics with `--workers N`: one fresh directory per run for
prometheus_client's multiprocess files (every worker writes its own there, a scrape of any
worker reads them all), a worker's live gauges forgotten when it exits, the directory
removed when the supervisor exits. A stale directory would carry an earlier run's counts into
this one, so an inherited PROMETHEUS_MULTIPROC_DIR is never reused."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from prometheus_client.multiprocess import mark_process_dead

from turnout.metrics.endpoint import MULTIPROC_ENV


class WorkerMetrics:
    """Made before the first worker starts: the workers inherit the directory through the
    environment. Tell `exited(pid)` of each worker that ends."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="turnout-metrics-")
        os.environ[MULTIPROC_ENV] = self.path  # the workers' environment (this process's copy)
        atexit.register(self.close)  # however the supervisor ends

    def exited(self, pid: int) -> None:
        """A worker is gone: its live gauges leave the sums; its counters stay counted."""
        mark_process_dead(pid, self.path)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
