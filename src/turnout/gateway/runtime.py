"""The runtime: everything derived from one config, built once and never changed.

Providers (with their keys and endpoints), the plans with their policy objects, the auth
rules, the budgets and the secret redactor. A request reads the gateway's runtime once, at
its start (`Exchange.runtime`), and uses only that snapshot to its end, so a reload that
installs a new runtime never changes a request half-way. What outlives a config (health
state, the ledger, the key table, spend so far, the event bus) is the Gateway's services.

A reload builds the next runtime from the one before (`previous`): providers whose section
did not change are carried over whole (their connection pools, their started state), and so
is each route's session memory when its consistency settings did not change. The runtime
counts the requests using it (`users`), so the providers it alone holds are closed only
once its last request has finished.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from turnout.accounting.auth import AuthRules
from turnout.accounting.budgets import Budget, budgets_of
from turnout.config.schema import Config, ProviderConfig
from turnout.config.secrets import Secret, SecretRedactor, secrets_in
from turnout.providers.base import Provider
from turnout.providers.registry import make_provider
from turnout.routing import Plan, Planner


class Users:
    """How many requests are using a runtime; what to do once the last has finished, after
    the runtime was replaced. Two integer operations per request."""

    __slots__ = ("_when_idle", "count")

    def __init__(self) -> None:
        self.count = 0
        self._when_idle: Callable[[], None] | None = None

    def enter(self) -> None:
        self.count += 1

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0 and self._when_idle is not None:
            then, self._when_idle = self._when_idle, None
            then()

    def when_idle(self, then: Callable[[], None]) -> None:
        """`then()` now if nobody uses the runtime, else when its last request finishes."""
        if self.count <= 0:
            then()
        else:
            self._when_idle = then


@dataclass(slots=True, frozen=True)
class Runtime:
    config: Config
    providers: Mapping[str, Provider]
    planner: Planner
    auth: AuthRules
    budgets: tuple[Budget, ...]
    redactor: SecretRedactor  # every secret of this config, gathered once
    version: str  # a hash of the config (and its secrets' values): what /health/providers shows
    users: Users = field(default_factory=Users, compare=False)

    @classmethod
    def build(cls, config: Config, previous: Runtime | None = None) -> Runtime:
        secrets = secrets_in(config)
        redactor = SecretRedactor.of(secrets)
        providers = {
            name: _carried_over(name, section, previous) or make_provider(name, section)
            for name, section in config.providers.items()
        }
        for provider in providers.values():
            # a key may leak through another provider's error: each redacts every secret
            provider.redactor = redactor
        return cls(
            config=config,
            providers=MappingProxyType(providers),
            planner=Planner(config, providers, previous=previous.planner if previous else None),
            auth=AuthRules.of(config),
            budgets=budgets_of(config),
            redactor=redactor,
            version=config_version(config, secrets),
        )

    def new_providers(self, previous: Runtime) -> list[Provider]:
        """This runtime's providers that `previous` did not have (to be started)."""
        kept = {id(p) for p in previous.providers.values()}
        return [p for p in self.providers.values() if id(p) not in kept]

    def plan(self, requested: str) -> Plan | None:
        """The plan for a route or model name a client sent; None when there is none."""
        return self.planner.plan(requested)

    @property
    def route_names(self) -> list[str]:
        return sorted(self.config.routes)


def config_version(config: Config, secrets: list[Secret]) -> str:
    """A short hash of the config as loaded: the same file and environment give the same
    version on every worker. Secrets count by a hash of their value, so a rotated key is a
    new version without the version ever carrying the key."""
    digest = hashlib.sha256(config.model_dump_json().encode())
    for secret in secrets:
        if secret.is_set:
            digest.update(hashlib.sha256(secret.reveal().encode()).digest())
    return digest.hexdigest()[:12]


def _carried_over(name: str, section: ProviderConfig, previous: Runtime | None) -> Provider | None:
    """The previous runtime's provider of this name when its section is unchanged."""
    if previous is None or name not in previous.providers:
        return None
    before = previous.config.providers.get(name)
    if before is None or _fingerprint(before) != _fingerprint(section):
        return None
    return previous.providers[name]


def _fingerprint(section: ProviderConfig) -> tuple[str, tuple[str | None, ...]]:
    secrets = tuple(s.reveal() if s.is_set else None for s in secrets_in(section))
    return section.model_dump_json(), secrets
