"""`turnout serve`: run the gateway."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from turnout.cli.common import config_from_args, redact_in_logs, setup_logging
from turnout.cli.workers import supervise
from turnout.config import load_config
from turnout.config.defaults import default_config
from turnout.config.schema import Config
from turnout.config.secrets import secrets_in
from turnout.events import ConfigReloaded
from turnout.gateway import ConfigSource, Gateway
from turnout.server import GatewayServer, ListenError

log = logging.getLogger("turnout")

WATCH_INTERVAL = 1.0  # seconds between looks at a watched config file


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(args: argparse.Namespace, argv: list[str]) -> int:
    # SIGHUP's default action kills the process: ignore it from the start (workers inherit
    # that); the serving loop below logs a warning instead
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config = config_from_args(args.config)
    if config is None:
        return 2
    if args.workers > 1:
        setup_logging(args.log_level or config.log_level, secrets_in(config))
        port = args.port if args.port is not None else config.server.port
        if port == 0:
            log.error("--workers needs a fixed port: the workers share it")
            return 2
        if config.state.backend == "memory":
            log.warning(
                "%d workers with state backend 'memory': each worker learns health alone;"
                " set state: {backend: redis} to share it",
                args.workers,
            )
        return supervise(args.workers, argv)
    updates = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    config = _with_flags(config, updates)
    source = _source(args.config, updates)
    setup_logging(args.log_level or config.log_level, secrets_in(config))
    _use_uvloop()
    try:
        asyncio.run(_serve(config, source, reuse_port=bool(args.reuse_port), watch=args.watch))
    except ListenError as exc:
        log.error("%s", exc)
        return 2
    return 0


def _with_flags(config: Config, updates: dict[str, object]) -> Config:
    """The config with the command line's --host/--port, which win over the file's."""
    if not updates:
        return config
    return config.model_copy(update={"server": config.server.model_copy(update=updates)})


def _source(path: str | None, updates: dict[str, object]) -> ConfigSource:
    """Where a reload reads the config: the same file (or the embedded defaults), with the
    same command-line flags applied."""
    path = path or os.environ.get("TURNOUT_CONFIG")
    if path is None:
        return ConfigSource("<embedded defaults>", lambda: _with_flags(default_config(), updates))
    return ConfigSource(path, lambda: _with_flags(load_config(path), updates))


async def _serve(config: Config, source: ConfigSource, reuse_port: bool, watch: bool) -> None:
    host = config.server.host
    gateway = Gateway(config, source)
    # a reload may bring new secrets: log lines must never show those either
    gateway.bus.subscribe(
        lambda _: redact_in_logs(secrets_in(gateway.config)),
        kinds=(ConfigReloaded,),
        inline=True,
        name="log-redaction",
    )
    async with GatewayServer(gateway, host, config.server.port, reuse_port=reuse_port) as server:
        routes = "; ".join(f"{n} -> {', '.join(r.targets)}" for n, r in config.routes.items())
        log.info(
            "turnout listening on http://%s:%s/v1 (routes: %s)", host, server.port, routes or "none"
        )
        watcher = None
        if watch and source.name != "<embedded defaults>":
            watcher = asyncio.create_task(_watch(Path(source.name), gateway), name="config-watch")
        try:
            await _until_signalled(gateway)
        finally:
            if watcher is not None:
                watcher.cancel()


async def _until_signalled(gateway: Gateway) -> None:
    """SIGTERM or SIGINT: stop taking connections, finish what is in flight (for
    `server.shutdown_grace`), then exit. SIGHUP: reload the config (the old one keeps
    serving when the new one does not load)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[object]] = set()

    def reload() -> None:
        task = loop.create_task(gateway.reload(), name="config-reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()


async def _watch(path: Path, gateway: Gateway) -> None:
    """`serve --watch`: reload when the config file changes (checked every second; an
    editor's save is one change, a half-written file fails validation and is retried on the
    next change)."""
    last = _stamp(path)
    while True:
        await asyncio.sleep(WATCH_INTERVAL)
        stamp = _stamp(path)
        if stamp != last:
            last = stamp
            await gateway.reload()


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime, stat.st_size
