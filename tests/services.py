"""The services some tests need, Redis and PostgreSQL: the machine's own when they answer on
their standard ports (or where TURNOUT_TEST_REDIS / TURNOUT_TEST_PG say), else a throwaway
one started from the installed server binaries for this test run, else the test is skipped
with a reason that says what to install. A plain clone thus tests itself wherever it can."""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable

import pytest

_found: dict[str, str | Exception] = {}  # service -> its address, or why there is none


class Unavailable(Exception):
    """This service cannot be had here: the reason is the skip's."""


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_it_answers(port: int, what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not _answers("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise Unavailable(f"a throwaway {what} on port {port} did not start")
        time.sleep(0.05)


def _once(service: str, find: Callable[[], str]) -> str:
    """The service's address, found (or started) once per test run; skips without it."""
    if service not in _found:
        try:
            _found[service] = find()
        except Unavailable as exc:
            _found[service] = exc
    found = _found[service]
    if isinstance(found, Exception):
        pytest.skip(f"{service}: {found}")
    return found


# --- Redis ------------------------------------------------------------------------------------


def redis_url() -> str:
    """A Redis URL (database 0) the test may use with its own key prefix."""
    return _once("redis", _find_redis)


def _find_redis() -> str:
    named = os.environ.get("TURNOUT_TEST_REDIS")
    if named:
        return named
    if _answers("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/0"
    return start_redis()


def start_redis() -> str:
    """A throwaway redis-server for this test run (stopped at exit); its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise Unavailable("no Redis on 127.0.0.1:6379 and no redis-server installed to start")
    port, folder = _free_port(), tempfile.mkdtemp(prefix="turnout-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(_stop, process, folder)
    _wait_until_it_answers(port, "redis-server")
    return f"redis://127.0.0.1:{port}/0"


# --- PostgreSQL -------------------------------------------------------------------------------


def postgres_server() -> str:
    """`postgresql://USER@HOST:PORT` of a server where USER may create databases, with a
    database `test` (the tests create and drop their own beside it)."""
    return _once("postgresql", _find_postgres)


def _find_postgres() -> str:
    named = os.environ.get("TURNOUT_TEST_PG")
    if named:
        return named.rstrip("/")
    if _answers("127.0.0.1", 5432):
        return "postgresql://postgres@127.0.0.1:5432"
    return start_postgres()


def start_postgres() -> str:
    """A throwaway PostgreSQL cluster for this test run (trust auth, stopped at exit)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    initdb = found[-1]
    if initdb is None:
        raise Unavailable("no PostgreSQL on 127.0.0.1:5432 and no initdb installed to start one")
    bin_dir = os.path.dirname(initdb)
    folder = tempfile.mkdtemp(prefix="turnout-pg-")
    run_as = _postgres_user(folder)
    data, port = os.path.join(folder, "data"), _free_port()
    _run(run_as, [initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    pg_ctl = os.path.join(bin_dir, "pg_ctl")
    _run(run_as, [pg_ctl, "-D", data, "-o", options, "-l", f"{folder}/log", "-w", "start"])
    atexit.register(_run, run_as, [pg_ctl, "-D", data, "-m", "immediate", "stop"], False)
    _wait_until_it_answers(port, "PostgreSQL")
    psql = os.path.join(bin_dir, "psql")
    url = f"postgresql://postgres@127.0.0.1:{port}"
    _run(run_as, [psql, f"{url}/postgres", "-qc", "CREATE DATABASE test"])
    return url


def _postgres_user(folder: str) -> list[str]:
    """PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres` user."""
    if os.geteuid() != 0:
        return []
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable("running as root with no `postgres` user to run a cluster as") from None
    os.chown(folder, user.pw_uid, user.pw_gid)
    return ["runuser", "-u", "postgres", "--"]


def _run(prefix: list[str], argv: list[str], check: bool = True) -> None:
    result = subprocess.run([*prefix, *argv], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise Unavailable(f"{os.path.basename(argv[0])} failed: {result.stderr.strip()[:300]}")


def _stop(process: subprocess.Popen[bytes], folder: str) -> None:
    process.terminate()
    process.wait(5)
    shutil.rmtree(folder, ignore_errors=True)
