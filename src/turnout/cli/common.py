"""Shared by the commands: loading config (file or embedded defaults) and logging setup."""

from __future__ import annotations

import logging
import os
import sys

from turnout.config import Config, ConfigError, load_config
from turnout.config.defaults import default_config
from turnout.config.secrets import Secret, SecretRedactor

# the provider kinds register the config sections they validate themselves (the sim's `sim:`),
# so that every command's config is checked whole when it loads
import turnout.providers  # noqa: F401  isort: skip


def config_from_args(path: str | None) -> Config | None:
    """The config named on the command line or in TURNOUT_CONFIG, else the embedded defaults.
    Prints the error and returns None when the config is unusable."""
    path = path or os.environ.get("TURNOUT_CONFIG")
    try:
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
    redactor = SecretRedactor.of(secrets or [])
    if redactor:
        for handler in logging.getLogger().handlers:
            handler.addFilter(RedactingFilter(redactor))


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
