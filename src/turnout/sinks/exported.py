"""The exported events: what of the bus's typed events leaves the gateway, and in what shape.

One exporter per exported type, in a registry keyed by the type's name (`fallback`,
`attempt_failed`, ...): the bus event class it reads and its `to_dict`, which returns the
event as plain JSON-able data, or None when this bus event is not one of its kind (a request
that did not fall back is no `fallback`). A new exported type (the rollout events, say)
is one `@exporter(...)` function here or in a plugin, and its name in
config/sinks.py EVENT_TYPES so that `events:` filters may name it.

Every exported event has `type`, `id` (unique, for consumers' de-duplication and NATS's),
`at` (epoch seconds) and, where it concerns a request, `request_id` and `route`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from turnout.events import (
    AttemptFinished,
    BudgetAlert,
    ConfigReloaded,
    HealthChanged,
    RequestFinished,
    RolloutChanged,
)
from turnout.events.kinds import AlertChanged

ToDict = Callable[[Any], dict[str, Any] | None]
_MESSAGE_LIMIT = 300  # an upstream's error text, kept short


@dataclass(slots=True, frozen=True)
class Exporter:
    name: str  # the exported type
    source: type  # the bus event class it reads
    to_dict: ToDict


@dataclass(slots=True)
class Exported:
    """One event on its way out: its type, its key (the route, else the provider or model:
    Kafka's partition key) and its data."""

    type: str
    key: str
    data: dict[str, Any]

    def json(self) -> bytes:
        return orjson.dumps(self.data)


EXPORTERS: dict[str, Exporter] = {}


def exporter(type_name: str, source: type) -> Callable[[ToDict], ToDict]:
    """Registers `to_dict` as the exporter of `type_name`, reading bus events of `source`."""

    def register(to_dict: ToDict) -> ToDict:
        EXPORTERS[type_name] = Exporter(type_name, source, to_dict)
        return to_dict

    return register


def export(exporter_: Exporter, event: Any) -> Exported | None:
    data = exporter_.to_dict(event)
    if data is None:
        return None
    data = {"type": exporter_.name, "id": uuid.uuid4().hex, **data}
    key = data.get("route") or data.get("provider") or data.get("model") or ""
    return Exported(exporter_.name, str(key), data)


def _first_choice_changed(attempts: list[dict[str, Any]], answered_by: str | None) -> bool:
    """A fallback: answered by another model than the first one tried (or skipped), or no
    answer after trying more than one model. A retry that the first model answers is not."""
    if not attempts:
        return False
    first = attempts[0].get("model")
    if answered_by is not None:
        return answered_by != first
    return len({a.get("model") for a in attempts}) > 1


def fell_back(row: Any) -> bool:
    """Whether a request's ledger row is a fallback (see _first_choice_changed)."""
    return _first_choice_changed(row.attempts, row.model if row.status == 200 else None)


@exporter("fallback", RequestFinished)
def fallback(event: RequestFinished) -> dict[str, Any] | None:
    row = event.row
    if not fell_back(row):
        return None
    attempts = [dict(a) for a in row.attempts]
    answered_by = row.model if row.status == 200 else None
    models = [a.get("model") for a in attempts]
    if answered_by is not None:
        models.append(answered_by)
    return {
        "at": row.started_at + row.latency_ms / 1000,
        "request_id": row.id,
        "route": row.route,
        "from_model": attempts[0].get("model"),
        "to_model": answered_by,  # None: no model answered
        "reason": attempts[0].get("reason"),
        "models": models,  # in the order tried, the answering one last
        "attempts": attempts,  # [{model, reason}] of each one that did not answer
        "outcome": row.outcome,
        "status": row.status,
        "provider": row.provider if answered_by is not None else None,
        "stream": row.stream,
        "latency_ms": round(row.latency_ms, 3),
        "ttft_ms": None if row.ttft_ms is None else round(row.ttft_ms, 3),
        "cost_usd": row.cost_usd,
    }


@exporter("attempt_failed", AttemptFinished)
def attempt_failed(event: AttemptFinished) -> dict[str, Any] | None:
    outcome = event.outcome
    if outcome.ok:
        return None
    message = outcome.message[:_MESSAGE_LIMIT] if outcome.message else None
    exported = {
        "at": outcome.ended or outcome.started + outcome.latency,
        "request_id": outcome.request_id,
        "route": outcome.route,
        "model": outcome.model,
        "provider": outcome.provider,
        "error_class": str(outcome.error_class) if outcome.error_class else None,
        "status": outcome.status,
        "message": message,
        "latency_ms": round(outcome.latency * 1000, 3),
        "probe": outcome.probe,
    }
    if outcome.deployment is not None:  # one of the model's several deployments
        exported["deployment"] = outcome.deployment
    return exported


@exporter("health_changed", HealthChanged)
def health_changed(event: HealthChanged) -> dict[str, Any]:
    return {
        "at": event.at,
        "model": event.model,  # None: the provider as a whole (its key was rejected)
        "provider": event.provider,
        "state": str(event.state),
        "reason": event.reason,
    }


@exporter("budget_alert", BudgetAlert)
def budget_alert(event: BudgetAlert) -> dict[str, Any]:
    data = event.as_dict()
    data.pop("type")
    if event.scope == "route":
        data["route"] = event.name
    return data


@exporter("config_reloaded", ConfigReloaded)
def config_reloaded(event: ConfigReloaded) -> dict[str, Any]:
    return {
        "at": event.at,
        "ok": event.ok,
        "version": event.version,
        "previous": event.previous,
        "source": event.source,
        "error": event.error,
        "restart_needed": list(event.restart_needed),
    }


@exporter("rollout", RolloutChanged)
def rollout(event: RolloutChanged) -> dict[str, Any]:
    return {
        "at": event.at,
        "route": event.route,
        "candidate": event.candidate,
        "action": event.action,
        "stage": event.stage,
        "percent": event.percent,
        "objective": event.objective,
        "observed": event.observed,
        "limit": event.limit,
        "figures": event.figures,
    }


@exporter("alert", AlertChanged)
def alert(event: AlertChanged) -> dict[str, Any]:
    return {
        **(event.details or {}),
        "at": event.at,
        "rule": event.rule,
        "state": "firing" if event.firing else "recovered",
        "subject": event.subject,
        "notify": event.notify,
        "text": event.message,
    }


def summary(exported: Exported) -> str:
    """One line for people (a Slack message's `text`)."""
    d = exported.data
    kind = exported.type
    if kind == "fallback":
        to = f"to {d['to_model']}" if d.get("to_model") else "and no model answered"
        tried = ", ".join(f"{a.get('model')} ({a.get('reason')})" for a in d["attempts"])
        return f"turnout: route {d['route']} fell back {to}; tried {tried} [{d['request_id']}]"
    if kind == "attempt_failed":
        return (
            f"turnout: {d['model']} on {d['provider']} failed: {d['error_class']}"
            f" (HTTP {d['status']}) for route {d['route']}"
        )
    if kind == "health_changed":
        what = d["model"] or f"provider {d['provider']}"
        reason = f": {d['reason']}" if d.get("reason") else ""
        return f"turnout: {what} is {d['state']}{reason}"
    if kind == "budget_alert":
        return (
            f"turnout: {d['scope']} {d['name']} {d['period']} spend ${d['spent_usd']:.4f}"
            f" of ${d['limit_usd']:.4f}"
        )
    if kind == "rollout":
        why = f" on {d['objective']} {d['observed']} > {d['limit']}" if d["objective"] else ""
        return (
            f"turnout: route {d['route']}: {d['candidate']} {d['action'].replace('_', ' ')}{why},"
            f" now {d['percent']:g}% of requests"
        )
    if kind == "config_reloaded":
        if d["ok"]:
            return f"turnout: config {d['version']} now serves (was {d['previous']})"
        return f"turnout: config reload failed, {d['version']} still serves: {d['error']}"
    if "text" in d:
        return str(d["text"])
    return f"turnout: {kind} event"
