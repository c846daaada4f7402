"""The runtime: everything derived from one config, built once and never changed.

Providers (with their keys and endpoints), the plans with their policy objects, the auth
rules, the budgets and the secret redactor. A request reads the gateway's runtime once, at
its start (`Exchange.runtime`), and uses only that snapshot to its end, so a reload that
installs a new runtime never changes a request half-way. What outlives a config (health
state, the ledger, the key table, spend so far, the event bus) is the Gateway's services.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from turnout.accounting.auth import AuthRules
from turnout.accounting.budgets import Budget, budgets_of
from turnout.config.schema import Config
from turnout.config.secrets import SecretRedactor, secrets_in
from turnout.providers.base import Provider
from turnout.providers.registry import make_provider
from turnout.routing import Plan, Planner


@dataclass(slots=True, frozen=True)
class Runtime:
    config: Config
    providers: Mapping[str, Provider]
    planner: Planner
    auth: AuthRules
    budgets: tuple[Budget, ...]
    redactor: SecretRedactor  # every secret of this config, gathered once

    @classmethod
    def build(cls, config: Config) -> Runtime:
        redactor = SecretRedactor.of(secrets_in(config))
        providers = {name: make_provider(name, p) for name, p in config.providers.items()}
        for provider in providers.values():
            # a key may leak through another provider's error: each redacts every secret
            provider.redactor = redactor
        return cls(
            config=config,
            providers=MappingProxyType(providers),
            planner=Planner(config, providers),
            auth=AuthRules.of(config),
            budgets=budgets_of(config),
            redactor=redactor,
        )

    def plan(self, requested: str) -> Plan | None:
        """The plan for a route or model name a client sent; None when there is none."""
        return self.planner.plan(requested)

    @property
    def route_names(self) -> list[str]:
        return sorted(self.config.routes)
