"""Loading config: YAML -> validated Config, with errors that name the file and key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from turnout.config.schema import Config


class ConfigError(Exception):
    """A config that cannot be used. The message names the file, the key path and the problem."""


def _key_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if part not in ("function-after", "function-before"))


def _describe(error: ErrorDetails) -> str:
    message = error["msg"].removeprefix("Value error, ")
    path = _key_path(error["loc"])
    # top-level checks (cross-references) carry their own key path in the message
    return f"{path}: {message}" if path else message


def parse_config(data: Any, source: str = "<config>") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, not {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {_describe(err)}" for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """The one YAML reader (config files, sim files): safe loading only, and a file that cannot
    be read or parsed is a ConfigError naming it (and the line and column, when known)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(
            f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"
        ) from None


def load_config(path: str | Path) -> Config:
    return parse_config(read_yaml(path), str(path))
