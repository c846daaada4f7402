"""`turnout serve`: run the gateway."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from turnout.cli.common import config_from_args, setup_logging
from turnout.cli.workers import supervise
from turnout.config.schema import Config
from turnout.config.secrets import secrets_in
from turnout.gateway import Gateway
from turnout.server import GatewayServer, ListenError

log = logging.getLogger("turnout")


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
    if updates:
        config = config.model_copy(update={"server": config.server.model_copy(update=updates)})
    setup_logging(args.log_level or config.log_level, secrets_in(config))
    _use_uvloop()
    try:
        asyncio.run(_serve(config, reuse_port=bool(args.reuse_port)))
    except ListenError as exc:
        log.error("%s", exc)
        return 2
    return 0


async def _serve(config: Config, reuse_port: bool) -> None:
    host = config.server.host
    gateway = Gateway(config)
    async with GatewayServer(gateway, host, config.server.port, reuse_port=reuse_port) as server:
        routes = "; ".join(f"{n} -> {', '.join(r.targets)}" for n, r in config.routes.items())
        log.info(
            "turnout listening on http://%s:%s/v1 (routes: %s)", host, server.port, routes or "none"
        )
        await _until_signalled()


async def _until_signalled() -> None:
    """SIGTERM or SIGINT: stop taking connections, finish what is in flight (for
    `server.shutdown_grace`), then exit. SIGHUP: keep serving (no reload yet)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload_not_supported)
    await stop.wait()


def _reload_not_supported() -> None:
    log.warning("SIGHUP received: reloading the config is not supported yet; still serving")
