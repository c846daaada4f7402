"""Provider kinds by name: each kind's config model and the factory that builds its provider.

A kind is one module (providers/openai.py, providers/sim.py, ... or a plugin's own) that
calls `register` when imported; config validation picks the kind's model through the hook
this fills in config/schema.py, and `make_provider` builds from the registered factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from turnout.config.load import ConfigError
from turnout.config.schema import ProviderConfig, provider_kinds, register_provider_kind
from turnout.providers.base import Provider

# (provider name, its validated config) -> the provider; the config is the kind's own model
ProviderFactory = Callable[[str, Any], Provider]


@dataclass(frozen=True, slots=True)
class ProviderKind:
    name: str
    config_model: type[ProviderConfig]
    factory: ProviderFactory


_KINDS: dict[str, ProviderKind] = {}


def register(kind: str, config_model: type[ProviderConfig], factory: ProviderFactory) -> None:
    """Make `kind` usable in configs: sections with `kind: <kind>` are validated by
    `config_model` and their providers built by `factory`. Registering a kind twice replaces
    it (a plugin may override a built-in kind on purpose)."""
    _KINDS[kind] = ProviderKind(kind, config_model, factory)
    register_provider_kind(kind, config_model)


def make_provider(name: str, config: ProviderConfig) -> Provider:
    kind = _KINDS.get(config.kind)
    if kind is None:  # a config built without validation (model_construct)
        raise ConfigError(
            f"providers.{name}.kind: unknown provider kind {config.kind!r}"
            f" (known: {', '.join(provider_kinds())})"
        )
    return kind.factory(name, config)
