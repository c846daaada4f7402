"""Shared by the commands: loading config (file or embedded defaults) and logging setup."""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys

from turnout.config import Config, ConfigError, load_config
from turnout.config.defaults import default_config
from turnout.config.secrets import Secret, SecretRedactor

# the built-in provider kinds register their config models on import, so that every
# command's config is checked whole, each provider section by its kind's model
import turnout.providers  # noqa: F401  isort: skip

# and routing its policy names, so that a route's `policy:` is checked when the config loads
from turnout import routing  # noqa: F401  isort: skip


# a dotted module name and nothing else: no paths, no files, no code
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", re.ASCII)


def import_plugins(names: str | None) -> None:
    """Import the modules named in TURNOUT_PLUGINS (comma-separated), before the config loads:
    a provider kind outside turnout registers itself on import (providers/registry.py), so
    configs may then name it. Only importable module names are accepted; a name that is not
    one, or a module that fails to import, is a ConfigError."""
    for name in filter(None, (part.strip() for part in (names or "").split(","))):
        if not _MODULE_NAME.fullmatch(name):
            raise ConfigError(f"TURNOUT_PLUGINS: {name!r} is not a module name like pkg.module")
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any failure of a plugin is a config error
            raise ConfigError(
                f"TURNOUT_PLUGINS: cannot import {name}: {type(exc).__name__}: {exc}"
            ) from None


def config_from_args(path: str | None) -> Config | None:
    """The config named on the command line or in TURNOUT_CONFIG, else the embedded defaults,
    after the plugins in TURNOUT_PLUGINS. Prints the error and returns None when the config
    is unusable."""
    path = path or os.environ.get("TURNOUT_CONFIG")
    try:
        import_plugins(os.environ.get("TURNOUT_PLUGINS"))
        return load_config(path) if path else default_config()
    except ConfigError as exc:
        print(f"turnout: config error\n{exc}", file=sys.stderr)
        return None


class RedactingFilter(logging.Filter):
    """Cleans every record's final text (message, exception, stack) of configured secrets,
    whichever logger or library wrote it. On handlers: records from child loggers skip
    the root logger's own filters but not its handlers'."""

    def __init__(self, redactor: SecretRedactor) -> None:
        super().__init__()
        self.redactor = redactor
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a malformed call: the handler reports it as logging always has
        redacted = self.redactor(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # formatted here, once, so the handler's formatter reuses the cleaned text
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        return True


def setup_logging(level: str, secrets: list[Secret] | None = None) -> None:
    """Log to stderr at `level`; with `secrets`, no line ever shows one (or a fragment)."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiohttp's access log costs time on every request; our own outcome records replace it
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    redact_in_logs(secrets or [])


def redact_in_logs(secrets: list[Secret]) -> None:
    """No log line shows any of `secrets` from now on, nor any secret it hid before (a
    reload's new secrets join the old ones, which requests in flight may still log)."""
    for handler in logging.getLogger().handlers:
        current = next((f for f in handler.filters if isinstance(f, RedactingFilter)), None)
        if current is None:
            redactor = SecretRedactor.of(secrets)
            if redactor:
                handler.addFilter(RedactingFilter(redactor))
        else:
            current.redactor = current.redactor.joined(SecretRedactor.of(secrets))


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
