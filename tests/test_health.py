"""The health engine, end to end: a real gateway process (two, for shared state), the
simulator as upstream, the openai SDK as client, the real Redis on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import openai
import pytest

from tests.conftest import ask, free_port
from tests.services import redis_url
from tests.upstreams import shared_sim

HEALTHY = {"reply": "primary answered", "tokens_per_second": 5000}
BACKUP = {"reply": "backup answered", "tokens_per_second": 5000}
FAST_HEALTH = {
    "breaker": {"consecutive_failures": 3, "open_for": "1s", "max_open_for": "2s"},
    "probe_interval": "100ms",
    "misconfigured_probe_interval": "500ms",
}


def _config(
    sim, targets=("primary", "backup"), route_extra=None, state=None, one_provider=True
) -> dict:
    """Both models on one provider, or (one_provider=False) each on its own, as with two
    keys at two providers."""
    names = ("primary", "backup")
    providers = ["sim"] * 2 if one_provider else ["sim-a", "sim-b"]
    config = {
        "providers": {p: {"kind": "openai", "base_url": sim.base_url} for p in providers},
        "models": {name: {"provider": p} for name, p in zip(names, providers, strict=True)},
        "routes": {"chat": {"targets": list(targets), **(route_extra or {})}},
        "health": FAST_HEALTH,
    }
    if state:
        config["state"] = state
    return config


def _target(gateway, model: str) -> dict:
    health = gateway.get("/health/providers").json()
    return next(t for t in health["routes"]["chat"]["targets"] if t["model"] == model)


def _wait_for(predicate, timeout: float, step: float = 0.05) -> float:
    """Seconds until predicate() held; fails the test past `timeout`."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "condition not reached in time"
        time.sleep(step)
    return time.monotonic() - started


def test_outage_opens_breaker_routes_around_and_recovers(gateway_factory) -> None:
    with shared_sim({"primary": HEALTHY, "backup": BACKUP}) as sim:
        gateway = gateway_factory(_config(sim))
        for _ in range(3):
            assert ask(gateway)[0] == "primary answered"

        sim.set("primary", error_rate={"500": 1.0})
        reasons = []
        for _ in range(3):  # consecutive_failures: 3 tried and failed over
            text, headers = ask(gateway)
            assert text == "backup answered"
            reasons.append(headers["x-turnout-fallback"])
        assert reasons == ["primary=server_error(500)"] * 3
        assert _target(gateway, "primary")["state"] == "open"
        assert gateway.get("/health/providers").json()["routes"]["chat"]["active"] == "backup"

        # open: the dead model gets no client traffic at all, only the odd probe
        before = sim.requests("primary")
        started = time.monotonic()
        for stream in (False, True) * 15:
            text, headers = ask(gateway, stream=stream)
            assert text == "backup answered"
            if headers["x-turnout-fallback"] == "primary=server_error(500)":
                # this request was the half-open probe: tried once, failed over at once
                assert headers["x-turnout-attempts"] == "2"
            else:
                assert headers["x-turnout-fallback"].startswith("primary=open(")
                assert headers["x-turnout-attempts"] == "1"
        elapsed = time.monotonic() - started
        probes = sim.requests("primary") - before
        assert probes <= 1 + int(elapsed / 1.0)  # at most one probe per open period

        sim.set("primary", **HEALTHY)
        # back within the probe interval: open for at most max_open_for (2s), probed at 100ms
        _wait_for(lambda: ask(gateway)[0] == "primary answered", timeout=4.0, step=0.1)
        assert _target(gateway, "primary")["state"] == "healthy"
        assert "healthy again" in gateway.log()


def test_idle_model_is_probed_and_closes_without_client_traffic(gateway_factory) -> None:
    with shared_sim({"primary": {"error_rate": {"503": 1.0}}, "backup": BACKUP}) as sim:
        gateway = gateway_factory(_config(sim))
        for _ in range(3):
            ask(gateway)
        assert _target(gateway, "primary")["state"] == "open"
        sim.set("primary", **HEALTHY)
        # no client request at all: the synthetic probe alone closes the breaker
        _wait_for(lambda: _target(gateway, "primary")["state"] == "healthy", timeout=4.0)
        assert _target(gateway, "primary")["requests"] == 3  # probes are not client requests


def test_429_retry_after_cools_down_without_counting_a_failure(gateway_factory) -> None:
    with shared_sim(
        {"primary": {"rate_limit_rate": 1.0, "retry_after": 20}, "backup": BACKUP}
    ) as sim:
        gateway = gateway_factory(_config(sim))
        text, headers = ask(gateway)
        assert text == "backup answered"
        assert headers["x-turnout-fallback"] == "primary=rate_limited(429)"
        asked_at = time.time()
        for _ in range(5):
            text, headers = ask(gateway)
            assert headers["x-turnout-attempts"] == "1"
            assert headers["x-turnout-fallback"].startswith("primary=rate_limited(")
        assert sim.requests("primary") == 1
        target = _target(gateway, "primary")
        assert target["state"] == "rate_limited"
        assert 17 < target["until"] - asked_at < 21  # kept out for Retry-After: 20 s
        assert target["breaker"] == "closed"
        assert target["failures"] == 0
        assert target["error_rate"] == 0


def test_remaining_zero_diverts_before_any_429(gateway_factory) -> None:
    exhausted = {**HEALTHY, "ratelimit_remaining": 0, "ratelimit_reset": "30s"}
    with shared_sim({"primary": exhausted, "backup": BACKUP}) as sim:
        gateway = gateway_factory(_config(sim))
        assert ask(gateway)[0] == "primary answered"  # says: 0 requests left for 30 s
        text, headers = ask(gateway)
        assert text == "backup answered"
        assert headers["x-turnout-attempts"] == "1"
        assert headers["x-turnout-fallback"].startswith("primary=rate_limited(")
        assert sim.requests("primary") == 1  # diverted before it could say 429
        assert _target(gateway, "primary")["state"] == "rate_limited"


def test_rate_limit_is_per_model_not_per_provider(gateway_factory) -> None:
    behaviours = {"primary": {"rate_limit_rate": 1.0, "retry_after": 30}, "backup": BACKUP}
    with shared_sim(behaviours) as sim:
        gateway = gateway_factory(_config(sim))
        ask(gateway)
        assert _target(gateway, "primary")["state"] == "rate_limited"
        assert _target(gateway, "backup")["state"] == "healthy"  # same provider, still used


def test_401_marks_misconfigured_then_a_probe_restores(gateway_factory) -> None:
    with shared_sim({"primary": {"error_rate": {"401": 1.0}}, "backup": BACKUP}) as sim:
        gateway = gateway_factory(_config(sim, one_provider=False))
        text, headers = ask(gateway)
        assert text == "backup answered"
        assert headers["x-turnout-fallback"] == "primary=auth(401)"
        health = gateway.get("/health/providers").json()
        assert health["providers"]["sim-a"]["state"] == "misconfigured"
        assert "sim-b" not in health["providers"]
        assert _target(gateway, "primary")["state"] == "misconfigured"
        errors = [line for line in gateway.log().splitlines() if " ERROR " in line]
        assert any("provider sim-a is misconfigured" in line for line in errors)
        # nothing else about the request failed; later ones skip the model without trying
        text, headers = ask(gateway)
        assert (text, headers["x-turnout-attempts"]) == ("backup answered", "1")
        sim.set("primary", **HEALTHY)  # the key was rotated
        _wait_for(lambda: _target(gateway, "primary")["state"] == "healthy", timeout=4.0)
        assert ask(gateway)[0] == "primary answered"


def test_unknown_model_name_misconfigures_that_model_only(gateway_factory) -> None:
    with shared_sim({"backup": BACKUP}) as sim:  # the upstream has no model "primary": 404
        gateway = gateway_factory(_config(sim))
        text, headers = ask(gateway)
        assert text == "backup answered"
        assert headers["x-turnout-fallback"] == "primary=auth(404)"
        assert _target(gateway, "primary")["state"] == "misconfigured"
        assert _target(gateway, "backup")["state"] == "healthy"  # same provider, same key


def test_quota_exhaustion_cools_down_long_and_logs_an_error(gateway_factory) -> None:
    with shared_sim({"primary": {"error_rate": {"402": 1.0}}, "backup": BACKUP}) as sim:
        gateway = gateway_factory(_config(sim))
        assert ask(gateway)[1]["x-turnout-fallback"] == "primary=quota(402)"
        target = _target(gateway, "primary")
        assert target["state"] == "quota_exhausted"
        assert target["until"] - time.time() > 3000  # the default quota cooldown: 1 h
        assert any(" ERROR " in line and "quota" in line for line in gateway.log().splitlines())


def test_two_gateways_share_breaker_state_through_redis(gateway_factory) -> None:
    state = {
        "backend": "redis",
        "url": redis_url(),
        "prefix": f"turnout-test-{uuid.uuid4().hex[:8]}",
    }
    with shared_sim({"primary": HEALTHY, "backup": BACKUP}) as sim:
        first = gateway_factory(_config(sim, state=state))
        second = gateway_factory(_config(sim, state=state))
        assert ask(second)[0] == "primary answered"
        assert second.get("/health/providers").json()["state_backend"]["shared"] is True

        sim.set("primary", error_rate={"500": 1.0})
        for _ in range(3):
            assert ask(first)[0] == "backup answered"  # the first gateway sees it die
        assert _target(first, "primary")["state"] == "open"
        agreed_in = _wait_for(lambda: _target(second, "primary")["state"] == "open", 1.0, 0.02)
        assert agreed_in < 1.0
        before = sim.requests("primary")
        text, headers = ask(second)
        assert text == "backup answered"
        assert headers["x-turnout-fallback"].startswith("primary=open(")
        assert sim.requests("primary") == before  # the second one never sent it traffic

        sim.set("primary", **HEALTHY)
        _wait_for(lambda: _target(second, "primary")["state"] == "healthy", timeout=5.0)
        _wait_for(lambda: _target(first, "primary")["state"] == "healthy", timeout=5.0)


def test_redis_down_degrades_to_local_state(gateway_factory) -> None:
    state = {"backend": "redis", "url": f"redis://127.0.0.1:{free_port()}/0"}
    with shared_sim({"primary": HEALTHY, "backup": BACKUP}) as sim:
        gateway = gateway_factory(_config(sim, state=state))
        assert ask(gateway)[0] == "primary answered"
        sim.set("primary", error_rate={"500": 1.0})
        for _ in range(4):
            assert ask(gateway)[0] == "backup answered"
        assert _target(gateway, "primary")["state"] == "open"  # local breaker still works
        health = gateway.get("/health/providers").json()
        assert health["state_backend"]["shared"] is False
        warnings = [line for line in gateway.log().splitlines() if " WARNING " in line]
        assert any("Redis" in line and "local" in line for line in warnings)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_stale_if_error_serves_the_last_good_answer(gateway_factory, stream) -> None:
    with shared_sim({"primary": HEALTHY, "backup": BACKUP}) as sim:
        config = _config(
            sim, targets=["primary"], route_extra={"stale_if_error": {"max_age": "1h"}}
        )
        gateway = gateway_factory(config)
        assert ask(gateway, "what is 2+2?", stream)[0] == "primary answered"
        sim.set("primary", error_rate={"500": 1.0})
        text, headers = ask(gateway, "what is 2+2?", stream)
        assert text == "primary answered"
        assert headers["x-turnout-stale"] == "true"
        assert int(headers["age"]) >= 0
        assert headers["x-turnout-fallback"] == "primary=server_error(500)"
        with pytest.raises(openai.APIStatusError) as failed:  # never asked before: no answer
            ask(gateway, "a different question", stream)
        assert failed.value.status_code == 503


def test_queue_waits_for_a_target_to_come_back(gateway_factory) -> None:
    limited = {"rate_limit_rate": 1.0, "retry_after": 1}
    with shared_sim({"primary": limited, "backup": BACKUP}) as sim:
        config = _config(sim, targets=["primary"], route_extra={"queue": {"max_wait": "10s"}})
        gateway = gateway_factory(config)
        threading.Timer(0.3, lambda: sim.set("primary", **HEALTHY)).start()
        text, headers = ask(gateway)
        assert text == "primary answered"  # waited out the 1 s cooldown instead of a 503
        assert headers["x-turnout-attempts"] == "2"


def test_all_down_is_a_503_naming_each_target_state(gateway_factory) -> None:
    dead = {"error_rate": {"500": 1.0}}
    with shared_sim(
        {"primary": dead, "backup": {"rate_limit_rate": 1.0, "retry_after": 30}}
    ) as sim:
        gateway = gateway_factory(_config(sim))
        for _ in range(3):
            with pytest.raises(openai.APIStatusError):
                ask(gateway)
        with pytest.raises(openai.APIStatusError) as failed:
            ask(gateway)
        error = failed.value
        assert error.status_code == 503
        assert "primary: open(" in error.message
        assert "backup: rate_limited(" in error.message
        retry_after = int(error.response.headers["retry-after"])
        assert 1 <= retry_after <= 2  # the breaker's open period ends first, not the 30 s


def test_status_command_prints_the_table(gateway_factory) -> None:
    with shared_sim(
        {"primary": {"rate_limit_rate": 1.0, "retry_after": 30}, "backup": BACKUP}
    ) as sim:
        gateway = gateway_factory(_config(sim))
        ask(gateway)
        result = subprocess.run(
            [sys.executable, "-m", "turnout.cli.main", "status", "--url", gateway.url],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "COLUMNS": "200"},
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("primary" in line and "rate_limited until" in line for line in lines)
    assert any("backup (active)" in line and "healthy" in line for line in lines)
