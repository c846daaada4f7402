"""`turnout serve`: run the gateway."""

from __future__ import annotations

import argparse
import asyncio
import logging

from aiohttp import web

from turnout.cli.common import config_from_args, setup_logging
from turnout.gateway import Gateway
from turnout.server import make_app

log = logging.getLogger("turnout")


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(args: argparse.Namespace) -> int:
    config = config_from_args(args.config)
    if config is None:
        return 2
    updates = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if updates:
        config = config.model_copy(update={"server": config.server.model_copy(update=updates)})
    setup_logging(args.log_level or config.log_level)
    _use_uvloop()
    gateway = Gateway(config)
    app = make_app(gateway)
    host, port = config.server.host, config.server.port

    def ready(_: object) -> None:
        routes = "; ".join(f"{n} -> {', '.join(r.targets)}" for n, r in config.routes.items())
        log.info("turnout listening on http://%s:%s/v1 (routes: %s)", host, port, routes or "none")

    web.run_app(app, host=host, port=port, access_log=None, print=ready, shutdown_timeout=10)
    return 0
