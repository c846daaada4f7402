"""Route policies as objects: each built once per route by the planner, from the one registry of
policy names, and asked per request by the selector (which never reads the config).

The orderings are checked on real Targets of a real Gateway's plans, built from a config; the
provider (an OpenAI-compatible one on a closed port) is never called. The end-to-end
behaviour of the built-in policies through a gateway process is in tests/test_routing.py."""

from __future__ import annotations

import time
from typing import Any

import pytest

from turnout.config import ConfigError, parse_config
from turnout.gateway import Gateway
from turnout.model import Outcome, Request
from turnout.routing.planner import Plan
from turnout.routing.policies import (
    POLICIES,
    Cheapest,
    Fastest,
    Policy,
    Priority,
    Weighted,
)
from turnout.routing.targets import Target

PRICES = {
    "a": {"input": 1.0, "output": 5.0},
    "b": {"input": 0.1, "output": 0.4},
    "c": {"input": 0.05, "output": 2.0},
}


def _gateway(route: dict[str, Any], tmp_path: Any) -> Gateway:
    upstream = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}
    config = {
        # a and b share one provider, c has its own: enough to take c away on its own
        "providers": {"one": upstream, "two": upstream},
        "models": {
            name: {"provider": "two" if name == "c" else "one", "price": price}
            for name, price in PRICES.items()
        },
        "routes": {"chat": {"targets": ["a", "b", "c"], **route}},
        "ledger": {"backend": "off"},
        "data_dir": str(tmp_path),
    }
    return Gateway(parse_config(config))


def _plan(gateway: Gateway, name: str = "chat") -> Plan:
    plan = gateway.planner.plan(name)
    assert plan is not None
    return plan


def _request(**fields: Any) -> Request:
    return Request(model="chat", messages=[{"role": "user", "content": "hi"}], **fields)


def _order(gateway: Gateway, request: Request, prompt: int | None = None) -> list[str]:
    plan = _plan(gateway)
    ordered = plan.policy.order(list(plan.targets), request, gateway.health, prompt)
    return [t.name for t in ordered]


async def _selected(gateway: Gateway, request: Request, plan: str = "chat") -> list[str]:
    selection = await gateway.selector.select(_plan(gateway, plan), request)
    return [t.name for t in selection.plan.targets]


def test_every_route_gets_its_policy_built_once_at_plan_time(tmp_path) -> None:
    gateway = _gateway({"policy": "cheapest"}, tmp_path)
    plan = _plan(gateway)
    assert isinstance(plan.policy, Cheapest)
    assert set(plan.policies) == set(POLICIES)  # what an admin's override header may name
    assert plan.policies["cheapest"] is plan.policy
    assert all(isinstance(t, Target) for t in plan.targets)
    assert _plan(gateway, "a").forced  # a model's own plan: nothing to order


def test_priority_keeps_the_configured_order(tmp_path) -> None:
    gateway = _gateway({}, tmp_path)
    assert isinstance(_plan(gateway).policy, Priority)
    assert _order(gateway, _request()) == ["a", "b", "c"]


def test_weighted_puts_a_drawn_target_first_and_keeps_the_rest_in_order(tmp_path) -> None:
    gateway = _gateway({"policy": "weighted", "weights": {"b": 1}}, tmp_path)
    assert isinstance(_plan(gateway).policy, Weighted)
    assert _order(gateway, _request()) == ["b", "a", "c"]

    split = _gateway({"policy": "weighted", "weights": {"a": 1, "c": 3}}, tmp_path)
    firsts = [_order(split, _request()) for _ in range(400)]
    assert {tuple(order) for order in firsts} == {("a", "b", "c"), ("c", "a", "b")}
    share_c = sum(order[0] == "c" for order in firsts) / len(firsts)
    assert 0.6 < share_c < 0.9  # 3 in 4, loosely


def test_weighted_without_weights_leaves_the_order(tmp_path) -> None:
    # an admin may ask for `weighted` on a route configured without weights
    gateway = _gateway({}, tmp_path)
    plan = _plan(gateway)
    weighted = plan.policies["weighted"]
    ordered = weighted.order(list(plan.targets), _request(), gateway.health, None)
    assert [t.name for t in ordered] == ["a", "b", "c"]


def test_cheapest_orders_by_the_expected_cost_of_this_request(tmp_path) -> None:
    gateway = _gateway({"policy": "cheapest"}, tmp_path)
    # a long answer: output prices dominate
    assert _order(gateway, _request(max_tokens=1000), prompt=10) == ["b", "c", "a"]
    # a huge prompt and a one-token answer: input prices dominate
    assert _order(gateway, _request(max_tokens=1), prompt=100_000) == ["c", "b", "a"]
    # no count from the context check: the prompt is estimated, the answer taken as 256
    assert _order(gateway, _request()) == ["b", "c", "a"]


def _measured(gateway: Gateway, model: str, seconds: float) -> None:
    provider = "two" if model == "c" else "one"
    for _ in range(3):
        gateway.health.record(
            Outcome("chat", model, provider, ok=True, started=time.time(), latency=seconds)
        )


def test_fastest_orders_by_recent_latency_and_tries_the_unmeasured_first(tmp_path) -> None:
    gateway = _gateway({"policy": "fastest"}, tmp_path)
    assert isinstance(_plan(gateway).policy, Fastest)
    _measured(gateway, "a", 0.3)
    _measured(gateway, "b", 0.1)
    assert _order(gateway, _request()) == ["c", "b", "a"]  # c has no figures yet
    _measured(gateway, "c", 0.2)
    assert _order(gateway, _request()) == ["b", "c", "a"]


async def test_session_consistency_follows_the_policy_and_moves_whole(tmp_path) -> None:
    gateway = _gateway({"consistency": {"mode": "session"}}, tmp_path)
    plan = _plan(gateway)
    assert plan.consistency is not None
    step = _request(session="s1")
    assert await _selected(gateway, step) == ["a", "b", "c"]  # a new session: the policy's
    gateway.selector.remember(plan, step, "c")  # c answered it
    assert await _selected(gateway, _request(session="s1")) == ["c", "a", "b"]
    assert await _selected(gateway, _request(session="s2")) == ["a", "b", "c"]
    gateway.health.mark_unusable("two", "test")  # c is gone: its sessions go back to the order
    assert await _selected(gateway, _request(session="s1")) == ["a", "b", "c"]


async def test_session_consistency_prefers_a_healthy_preferred_model(tmp_path) -> None:
    gateway = _gateway({"consistency": {"prefer": ["c"]}}, tmp_path)
    gateway.selector.remember(_plan(gateway), _request(session="s1"), "b")
    assert await _selected(gateway, _request(session="s1")) == ["c", "a", "b"]
    gateway.health.mark_unusable("two", "test")
    assert await _selected(gateway, _request(session="s1")) == ["b", "a", "c"]


async def test_an_admin_override_uses_the_routes_prebuilt_policy_of_that_name(tmp_path) -> None:
    gateway = _gateway({}, tmp_path)
    assert await _selected(gateway, _request(max_tokens=1000)) == ["a", "b", "c"]
    cheapest = _request(max_tokens=1000, policy="cheapest")
    assert await _selected(gateway, cheapest) == ["b", "c", "a"]
    forced = Request(model="a", messages=[], policy="cheapest")
    assert await _selected(gateway, forced, plan="a") == ["a"]


def test_config_refuses_a_policy_name_the_registry_does_not_have(tmp_path) -> None:
    with pytest.raises(ConfigError) as refused:
        _gateway({"policy": "random"}, tmp_path)
    message = str(refused.value)
    assert "routes.chat.policy" in message
    assert all(name in message for name in POLICIES)  # the registry's names, listed once


class Reverse(Policy):
    """A policy only this test knows: the route's targets backwards."""

    name = "reverse"

    def order(
        self, targets: list[Target], request: Request, health: Any, prompt: int | None
    ) -> list[Target]:
        return targets[::-1]


async def test_a_registered_policy_can_be_named_in_a_route_and_orders_it(
    tmp_path, monkeypatch
) -> None:
    with pytest.raises(ConfigError):
        _gateway({"policy": "reverse"}, tmp_path)
    monkeypatch.setitem(POLICIES, "reverse", Reverse)  # registered for this test only
    gateway = _gateway({"policy": "reverse"}, tmp_path)
    assert isinstance(_plan(gateway).policy, Reverse)
    assert await _selected(gateway, _request()) == ["c", "b", "a"]
    # and every other route may have it as an admin's override
    assert await _selected(gateway, _request(policy="reverse")) == ["c", "b", "a"]
