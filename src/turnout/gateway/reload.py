"""What a config reload can change in a running gateway, and what needs a restart.

Everything derived from the config (providers, routes and their plans, models, auth rules,
budgets) is rebuilt into a new runtime snapshot and swapped in at once. The services built
once at start-up from a few sections (the listening socket, the state and ledger backends,
health's breaker settings, captures, metrics, traces, event sinks) keep what they started with: a reload that changes one
of those sections still applies the rest, and says which sections wait for a restart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from turnout.config.schema import Config


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Where a reload reads the config from: a file, or the embedded defaults. `load` raises
    ConfigError (naming the file and the key path) for a config that cannot be used."""

    name: str
    load: Callable[[], Config]


# sections read once, at start-up, by what outlives a config
_AT_START = (
    "server",
    "state",
    "ledger",
    "data_dir",
    "health",
    "log_level",
    "metrics",  # the /metrics recorder and the dashboard are set up with the server
    "traces",
    "sinks",  # each sink's connection and queue are built with the gateway
    "alerts",
)


def restart_needed(before: Config, after: Config) -> tuple[str, ...]:
    """The start-up sections that differ between two configs (their new values wait)."""
    changed = [name for name in _AT_START if getattr(before, name) != getattr(after, name)]
    if _captured(before) != _captured(after):
        changed.append("routes.*.capture")
    return tuple(changed)


def _captured(config: Config) -> dict[str, object]:
    return {name: route.capture for name, route in config.routes.items() if route.capture}
