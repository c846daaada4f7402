"""Reloading the config of a running gateway, and which config each worker runs.

One process reloads itself (`Gateway.reload`). Under `turnout serve --workers N` the
supervisor forwards a SIGHUP to every worker, and a reload asked of one worker through
`POST /admin/reload` is passed on the same way: the worker reloads itself first (so an invalid
config is reported to the caller at once), then signals the supervisor, and each sibling
reloads (the first sees an unchanged version and does nothing). Each worker writes the
version it runs to a small file in a directory the supervisor made, so that
`/health/providers` answered by any worker shows them all."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

import orjson

from turnout.events import ConfigReloaded
from turnout.gateway import Gateway

log = logging.getLogger("turnout.server")

# set by the supervisor (cli/workers.py) in each worker's environment
SUPERVISOR_PID = "TURNOUT_SUPERVISOR_PID"
WORKERS_DIR = "TURNOUT_WORKERS_DIR"


class WorkerBoard:
    """One file per worker (`<pid>.json`: its config version and when it was loaded)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / f"{os.getpid()}.json"

    @classmethod
    def from_env(cls) -> WorkerBoard | None:
        directory = os.environ.get(WORKERS_DIR)
        return cls(Path(directory)) if directory else None

    def post(self, version: str, loaded_at: float) -> None:
        """This worker's version, written whole (a reader never sees half a file)."""
        document = {"pid": os.getpid(), "version": version, "loaded_at": loaded_at}
        partial = self.path.with_suffix(".tmp")
        try:
            partial.write_bytes(orjson.dumps(document))
            partial.replace(self.path)
        except OSError as exc:
            log.warning("cannot record this worker's config version in %s: %s", self.path, exc)

    def read(self) -> list[dict[str, Any]]:
        """Every live worker's entry (files of workers that have died are left out)."""
        workers = []
        for path in sorted(self.directory.glob("*.json")):
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                document = orjson.loads(path.read_bytes())
                if _alive(document.get("pid")):
                    workers.append(document)
        return workers

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def reload_everywhere(gateway: Gateway) -> ConfigReloaded:
    """Reload this process, then (under a supervisor, when the config changed) its siblings."""
    event = await gateway.reload()
    supervisor = os.environ.get(SUPERVISOR_PID)
    if event.ok and event.version != event.previous and supervisor:
        try:
            os.kill(int(supervisor), signal.SIGHUP)
        except (ValueError, OSError) as exc:
            log.error(
                "cannot ask the supervisor (pid %s) to reload the workers: %s", supervisor, exc
            )
    return event


def describe(event: ConfigReloaded) -> dict[str, Any]:
    """A reload's result as the admin endpoint and `turnout reload` show it."""
    return {
        "ok": event.ok,
        "version": event.version,
        "previous": event.previous,
        "changed": event.ok and event.version != event.previous,
        "source": event.source,
        "error": event.error,
        "restart_needed": list(event.restart_needed),
        "at": event.at,
        "pid": os.getpid(),
    }
