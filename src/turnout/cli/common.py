"""Shared by the commands: loading config (file or embedded defaults) and logging setup."""

from __future__ import annotations

import logging
import os
import sys

from turnout.config import Config, ConfigError, load_config
from turnout.config.defaults import default_config


def config_from_args(path: str | None) -> Config | None:
    """The config named on the command line or in TURNOUT_CONFIG, else the embedded defaults.
    Prints the error and returns None when the config is unusable."""
    path = path or os.environ.get("TURNOUT_CONFIG")
    try:
        return load_config(path) if path else default_config()
    except ConfigError as exc:
        print(f"turnout: config error\n{exc}", file=sys.stderr)
        return None


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiohttp's access log costs time on every request; our own outcome records replace it
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def configured_store(path: str | None, command: str):
    """The store of the ledger the config names; None (after saying why) when unusable."""
    from turnout.accounting.service import make_configured_store

    config = config_from_args(path)
    if config is None:
        return None
    store = make_configured_store(config)
    if store is None:
        print(f"turnout {command}: the ledger is off (ledger.backend: off)", file=sys.stderr)
    return store
