"""Endpoints beside the chat APIs: models, health, usage, and the admin ones (keys, events).

With authentication on, /health/providers and /admin/* need an admin key, /v1/models and
/v1/usage any valid key; a key sees its own usage and routes only, never another's."""

from __future__ import annotations

import os
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from turnout import clock
from turnout.accounting.auth import AuthError, Identity
from turnout.accounting.budgets import period_start
from turnout.cache import CacheUnavailable
from turnout.config.fields import is_loopback
from turnout.dialects.openai.ingress import encode_error
from turnout.gateway import Gateway
from turnout.rollouts import RolloutError
from turnout.server.reload import WorkerBoard, describe, reload_everywhere

_JSON = "application/json"


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type=_JSON)


def _loopback(address: str | None) -> bool:
    return address is not None and is_loopback(address)


def error(status: int, message: str, error_type: str | None = None, code: str | None = None):
    body = encode_error(status, message, error_type=error_type, code=code)
    return web.Response(status=status, body=body, content_type=_JSON)


class AdminEndpoints:
    def __init__(self, gateway: Gateway, board: WorkerBoard | None = None) -> None:
        self.gateway = gateway
        self.worker = {"status": "ok", "pid": os.getpid()}  # which worker, with --workers
        self.board = board  # with --workers: every worker's config version

    async def _caller(self, http: web.Request, admin: bool) -> Identity | web.Response:
        gateway = self.gateway
        try:
            if admin:
                return await gateway.operator(http.headers, http.remote)
            return await gateway.auth.identify(http.headers, gateway.runtime.auth, http.remote)
        except AuthError as exc:
            refused = error(exc.status, exc.message, exc.error_type, exc.code)
            refused.headers.update(exc.headers)  # Retry-After of a blocked address
            return refused

    async def health(self, _: web.Request) -> web.Response:
        # the ledger writer's and the event bus's counters: a row that could not be written,
        # an event a slow subscriber dropped, is never silent
        gateway = self.gateway
        return json_response(
            {
                **self.worker,
                "ledger": gateway.accounting.ledger_stats(),
                "events": gateway.bus.stats(),
                "sinks": gateway.sinks.stats(),  # per sink: delivered, failed, dropped, ...
                # this process's alert rules: what it told, what it sees firing (None: no rules)
                "alerts": gateway.sinks.alert_stats(),
                "cache": gateway.cache.stats(),  # hits, misses, stored, entries or Redis errors
            }
        )

    async def health_providers(self, http: web.Request) -> web.Response:
        caller = await self._caller(http, admin=True)
        if isinstance(caller, web.Response):
            return caller
        health = self.gateway.route_health()
        if self.board is not None:
            health["config"]["workers"] = self.board.read()
        return json_response(health)

    async def reload(self, http: web.Request) -> web.Response:
        """POST /admin/reload: read the config again and install it (every worker, with
        --workers). A config that does not load is a 422 naming the file and key path; the
        old config keeps serving."""
        caller = await self._caller(http, admin=True)
        if isinstance(caller, web.Response):
            return caller
        if not self.gateway.runtime.auth.required and not _loopback(http.remote):
            return error(
                403, "Reloading without auth is allowed from this host only.", "permission_error"
            )
        event = await reload_everywhere(self.gateway)
        if not event.ok:
            refused = error(
                422,
                f"config not reloaded: {event.error}",
                "invalid_request_error",
                "config_invalid",
            )
            refused.headers["x-turnout-config-version"] = event.version
            return refused
        return json_response(describe(event))

    async def models(self, http: web.Request) -> web.Response:
        caller = await self._caller(http, admin=False)
        if isinstance(caller, web.Response):
            return caller
        return json_response({"object": "list", "data": self._models_for(caller)})

    async def model(self, http: web.Request) -> web.Response:
        """GET /v1/models/{id} (an id may hold slashes: "meta-llama/llama-4-scout")."""
        caller = await self._caller(http, admin=False)
        if isinstance(caller, web.Response):
            return caller
        wanted = http.path.removeprefix("/v1/models/")
        found = next((m for m in self._models_for(caller) if m["id"] == wanted), None)
        if found is None:
            message = f"The model {wanted[:100]!r} is not a route or model of this gateway."
            return error(404, message, "invalid_request_error", "model_not_found")
        return json_response(found)

    def _models_for(self, caller: Identity) -> list[dict[str, Any]]:
        """The routes the caller's key may use, and (for keys with every route) the models."""
        config = self.gateway.config
        allowed = caller.key.routes if caller.key and caller.key.routes is not None else None
        data = [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "turnout",
                "turnout": {"kind": "route", "targets": route.targets},
            }
            for name, route in config.routes.items()
            if allowed is None or name in allowed
        ]
        if allowed is None:
            data += [
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": model.placements()[0].provider,
                    "turnout": {"kind": "model", "upstream": model.model or name},
                }
                for name, model in config.models.items()
            ]
        return data

    async def usage(self, http: web.Request) -> web.Response:
        """The calling key's own spend and budgets: never another key's."""
        caller = await self._caller(http, admin=False)
        if isinstance(caller, web.Response):
            return caller
        if caller.key is None:
            return error(401, "Usage is per key: send your API key.", "authentication_error")
        spend, now, key = self.gateway.accounting.spend, clock.now(), caller.key
        return json_response(
            {
                "key": key.id,
                "name": key.name,
                "daily": {
                    "spent_usd": round(spend.spent("key", key.id, "daily", now), 8),
                    "budget_usd": key.daily_budget_usd,
                    "since": period_start("daily", now),
                },
                "monthly": {
                    "spent_usd": round(spend.spent("key", key.id, "monthly", now), 8),
                    "budget_usd": key.monthly_budget_usd,
                    "since": period_start("monthly", now),
                },
            }
        )

    async def keys(self, http: web.Request) -> web.Response:
        caller = await self._caller(http, admin=True)
        if isinstance(caller, web.Response):
            return caller
        store = self.gateway.accounting.store
        keys = await store.list_keys() if store is not None else []
        return json_response(
            [
                {
                    "id": k.id,
                    "name": k.name,
                    "prefix": k.prefix,
                    "routes": k.routes,
                    "rpm": k.rpm,
                    "tpm": k.tpm,
                    "daily_budget_usd": k.daily_budget_usd,
                    "monthly_budget_usd": k.monthly_budget_usd,
                    "admin": k.admin,
                    "revoked_at": k.revoked_at,
                }
                for k in keys
            ]
        )

    async def events(self, http: web.Request) -> web.Response:
        caller = await self._caller(http, admin=True)
        if isinstance(caller, web.Response):
            return caller
        return json_response(list(self.gateway.accounting.alerts.events))

    async def rollouts(self, http: web.Request) -> web.Response:
        """GET /admin/rollouts: every route's rollout, its stage, windows and history."""
        caller = await self._caller(http, admin=True)
        if isinstance(caller, web.Response):
            return caller
        return json_response(self.gateway.rollouts.status())

    async def rollout_control(self, http: web.Request) -> web.Response:
        """POST /admin/rollouts/{route}/{start|promote|rollback|abort}."""
        caller = await self._caller(http, admin=True)
        if isinstance(caller, web.Response):
            return caller
        route, _, action = http.path.removeprefix("/admin/rollouts/").rpartition("/")
        try:
            return json_response(self.gateway.rollouts.control(route, action))
        except RolloutError as exc:
            status = 404 if "has no rollout" in str(exc) else 409
            return error(status, str(exc), "invalid_request_error", "rollout_not_applicable")

    async def cache_clear(self, http: web.Request) -> web.Response:
        """POST /admin/cache/{route}/clear: forget the route's cached answers (every key's;
        with Redis, every gateway's). Without auth, from this host only, as a reload."""
        caller = await self._caller(http, admin=True)
        if isinstance(caller, web.Response):
            return caller
        if not self.gateway.runtime.auth.required and not _loopback(http.remote):
            return error(
                403,
                "Clearing the cache without auth is allowed from this host only.",
                "permission_error",
            )
        route, _, action = http.path.removeprefix("/admin/cache/").rpartition("/")
        if action != "clear" or route not in self.gateway.config.routes:
            message = f"No route {route[:100]!r}: POST /admin/cache/{{route}}/clear"
            return error(404, message, "invalid_request_error", "route_not_found")
        try:
            cleared = await self.gateway.cache.clear(route)
        except CacheUnavailable as exc:
            message = f"The cache could not be cleared ({exc}); try again"
            return error(503, message, "service_unavailable", "cache_unavailable")
        return json_response({"route": route, "cleared": cleared})

    def post_routes(self) -> list[tuple[str, Handler]]:
        """(path, handler) of the admin endpoints that change something: POSTs."""
        return [
            ("/admin/reload", self.reload),
            ("/admin/rollouts/*", self.rollout_control),
            ("/admin/cache/*", self.cache_clear),
        ]

    def routes(self) -> list[tuple[str, Handler]]:
        """(path, handler) of every admin endpoint that only reads: GETs."""
        return [
            ("/health", self.health),
            ("/health/providers", self.health_providers),
            ("/v1/models", self.models),
            ("/v1/models/*", self.model),
            ("/v1/usage", self.usage),
            ("/admin/keys", self.keys),
            ("/admin/events", self.events),
            ("/admin/rollouts", self.rollouts),
        ]
