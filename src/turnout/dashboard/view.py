"""The JSON the page renders (GET /dashboard/data): health's view of each route (the active
primary, each target's state and TTFT percentiles, from Gateway.route_health) joined with
the aggregator's traffic, spend and events."""

from __future__ import annotations

from typing import Any

from turnout.accounting.budgets import period_start
from turnout.dashboard.aggregator import WINDOW, Aggregator
from turnout.gateway import Gateway

# what a target's state means for the page: "down" targets get no traffic until they heal
_DOWN = frozenset({"open", "misconfigured", "quota_exhausted"})
_TARGET_FIELDS = (
    "model",
    "provider",
    "state",
    "reason",
    "until",
    "requests",
    "error_rate",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "latency_p50_ms",
    "latency_p95_ms",
)


def role(state: str, active: bool) -> str:
    """A target's part in its route: active (answers now), down, limited, probing, standby."""
    if active:
        return "active"
    if state in _DOWN:
        return "down"
    if state == "rate_limited":
        return "limited"
    if state == "half_open":
        return "probing"
    return "standby"


def dashboard_data(gateway: Gateway, aggregator: Aggregator, now: float) -> dict[str, Any]:
    health = gateway.route_health()
    routes = []
    for name, route in health["routes"].items():
        active = route["active"]
        targets = [
            {
                **{field: target.get(field) for field in _TARGET_FIELDS},
                "role": role(target["state"], target["model"] == active),
            }
            for target in route["targets"]
        ]
        routes.append({"name": name, "active": active, "targets": targets})
        routes[-1].update(aggregator.figures(name))
        if "rollout" in route:
            routes[-1]["rollout"] = _rollout(route["rollout"])
    other = aggregator.figures(None)
    return {
        "now": now,
        "window_minutes": WINDOW,
        # today's figures are this process's own, from the later of midnight UTC and its start
        "counting_since": max(aggregator.started_at, period_start("daily", now)),
        "config": health["config"],
        "routes": routes,
        "other": other if other["today"]["requests"] else None,
        "providers": health["providers"],  # a whole provider misconfigured (a rejected key)
        "events": aggregator.last_events(),
    }


def _rollout(state: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a route's rollout: its candidate, status and share (a shadow's
    pairs and flags)."""
    shown = {k: state[k] for k in ("candidate", "mode", "status", "percent", "stage", "stages")}
    shadow = state.get("shadow")
    if shadow is not None:
        shown["shadow"] = {"pairs": shadow["pairs"], "flags": shadow["flags"]}
    return shown
