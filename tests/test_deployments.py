"""Deployments: one model served from several places (regions, base URLs, keys), each with a
priority and its own health. Real gateways on real ports, each region a simulator on its own
port, the openai SDK as the client."""

from __future__ import annotations

import json
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.conftest import ledger_rows, sdk_client, turnout_cli
from tests.upstreams import SharedSim, key_echoing_upstream, serve_app, shared_sim

MESSAGES = [{"role": "user", "content": "hello"}]
FAST = {"tokens_per_second": 5000}
# quick to open and quick to probe again, so that the test sees a whole outage and recovery
HEALTH = {
    "breaker": {"consecutive_failures": 2, "open_for": 1.0, "max_open_for": 1.0},
    "probe_interval": 0.2,
}


def _regions(stack: ExitStack, names: list[str]) -> dict[str, SharedSim]:
    """One simulator per region, each serving `scout` with an answer naming its region."""
    return {
        name: stack.enter_context(shared_sim({"scout": {"reply": f"from {name}", **FAST}}))
        for name in names
    }


def _config(sims: dict[str, SharedSim], deployments: list[dict], **route: Any) -> dict:
    return {
        "providers": {
            name: {"kind": "openai", "base_url": sim.base_url} for name, sim in sims.items()
        },
        "models": {"scout": {"deployments": deployments, "supports": ["tools", "json"]}},
        "routes": {"chat": {"targets": ["scout"], **route}},
        "health": HEALTH,
    }


def _ask(client: openai.OpenAI, model: str = "chat", stream: bool = False) -> tuple[str, Any]:
    """(answer text, response headers) of one request; any client error fails the test."""
    if not stream:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        return raw.parse().choices[0].message.content or "", raw.headers
    with client.chat.completions.with_streaming_response.create(
        model=model, messages=MESSAGES, stream=True
    ) as response:
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
        return text, response.headers


def _scout(gateway: Any) -> dict[str, Any]:
    return gateway.get("/health/providers").json()["models"]["scout"]


def test_primary_down_goes_to_warm_standby_and_back_when_it_recovers(
    gateway_factory, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        sims = _regions(stack, ["us-east", "us-west", "eu-cold"])
        deployments = [
            {"provider": "us-east", "priority": 0},
            {"provider": "us-west", "priority": 1},
            {"provider": "eu-cold", "priority": 2},
        ]
        gateway = gateway_factory(_config(sims, deployments))
        client = sdk_client(gateway)

        # all well: the primary region serves
        for _ in range(3):
            text, headers = _ask(client)
            assert text == "from us-east"
            assert headers["x-turnout-model"] == "scout"
            assert headers["x-turnout-deployment"] == "us-east"
        assert _scout(gateway)["deployment"] == "us-east"

        # the primary region goes down: every request is still answered, by the warm standby
        sims["us-east"].set("scout", error_rate={503: 1.0})
        served: Counter[str] = Counter()
        fallbacks = []
        for i in range(12):
            text, headers = _ask(client, stream=i % 2 == 1)
            served[headers["x-turnout-deployment"]] += 1
            assert text == "from us-west"
            assert headers["x-turnout-model"] == "scout"  # one model, whichever region
            fallbacks.append(headers.get("x-turnout-fallback", ""))
        assert served == {"us-west": 12}
        assert fallbacks[0] == "scout@us-east=server_error(503)"
        assert fallbacks[-1].startswith("scout@us-east=open(")  # the breaker skips it now
        # forcing the model still uses its deployments
        _, headers = _ask(client, model="scout")
        assert headers["x-turnout-deployment"] == "us-west"

        # health is per deployment, and /health/providers shows each
        scout = _scout(gateway)
        assert scout["deployment"] == "us-west" and scout["state"] == "healthy"
        regions = scout["deployments"]
        assert regions["us-east"]["state"] in ("open", "half_open")
        assert regions["us-east"]["failures"] >= 2 and regions["us-east"]["priority"] == 0
        assert regions["us-west"]["state"] == "healthy" and regions["us-west"]["failures"] == 0
        assert regions["us-west"]["provider"] == "us-west"
        assert regions["eu-cold"]["requests"] == 0
        route = gateway.get("/health/providers").json()["routes"]["chat"]
        assert route["targets"][0]["deployment"] == "us-west"

        # the primary recovers: the breaker's probe succeeds and traffic goes back to it
        sims["us-east"].set("scout", reply="from us-east", **FAST)
        deadline = time.monotonic() + 30
        while _scout(gateway)["deployments"]["us-east"]["breaker"] != "closed":
            assert time.monotonic() < deadline, _scout(gateway)
            time.sleep(0.1)
        for i in range(4):
            text, headers = _ask(client, stream=i % 2 == 1)
            assert (text, headers["x-turnout-deployment"]) == ("from us-east", "us-east")
            assert "x-turnout-fallback" not in headers
        assert sims["eu-cold"].requests("scout") == 0  # the cold standby was never needed
        gateway.stop()  # the ledger is whole once the gateway has stopped

    rows = [r for r in ledger_rows("sqlite", str(tmp_path / "turnout.db")) if r.route == "chat"]
    assert {r.model for r in rows} == {"scout"}
    assert all(r.status == 200 for r in rows)
    by_provider = Counter(r.provider for r in rows)
    assert by_provider == {"us-east": 7, "us-west": 12}, by_provider


def test_warm_standby_is_tried_before_the_routes_next_model(gateway_factory) -> None:
    with ExitStack() as stack:
        sims = _regions(stack, ["primary", "standby", "other"])
        sims["primary"].set("scout", error_rate={500: 1.0})
        config = _config(
            sims,
            [
                {"provider": "primary", "priority": 0, "name": "east"},
                {"provider": "standby", "priority": 1, "name": "west", "model": "scout"},
            ],
        )
        config["models"]["backup"] = {"provider": "other", "model": "scout"}
        config["routes"]["chat"]["targets"] = ["scout", "backup"]
        gateway = gateway_factory(config)
        text, headers = _ask(sdk_client(gateway))
        assert (text, headers["x-turnout-model"]) == ("from standby", "scout")
        assert headers["x-turnout-deployment"] == "west"  # its own label, not the provider's
        assert headers["x-turnout-fallback"] == "scout@east=server_error(500)"
        assert sims["other"].requests("scout") == 0


def test_among_equal_priorities_the_lower_recent_ttft_wins(gateway_factory) -> None:
    with ExitStack() as stack:
        sims = {
            "slow": stack.enter_context(shared_sim({"scout": {"reply": "slow", "ttft": 1.0}})),
            "quick": stack.enter_context(shared_sim({"scout": {"reply": "quick", **FAST}})),
        }
        # the slow region is listed first, at the same priority
        deployments = [{"provider": "slow"}, {"provider": "quick"}]
        gateway = gateway_factory(_config(sims, deployments))
        client = sdk_client(gateway)
        # neither measured: the configured order; then the unmeasured one gets its turn
        answers = [_ask(client, stream=True)[0] for _ in range(2)]
        assert answers == ["slow", "quick"]
        # both measured: the quick one serves
        answers = [_ask(client, stream=True)[0] for _ in range(5)]
        assert answers == ["quick"] * 5
        assert sims["slow"].requests("scout") == 1
        regions = _scout(gateway)["deployments"]
        assert regions["slow"]["ttft_p50_ms"] > regions["quick"]["ttft_p50_ms"]


def _check(tmp_path: Path, models: dict[str, Any]) -> str:
    """`turnout check` on a config with these models: its refusal, as the user reads it."""
    config = {
        "providers": {
            "east": {"kind": "sim", "sim": {"scout": {}}},
            "west": {"kind": "sim", "sim": {"scout": {}}},
        },
        "models": models,
        "routes": {"chat": {"targets": list(models)}},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = turnout_cli("check", "-c", str(path))
    assert result.returncode != 0, result.stdout
    return result.stdout + result.stderr


def test_config_errors_are_clear(tmp_path: Path) -> None:
    both = _check(tmp_path, {"scout": {"provider": "east", "deployments": [{"provider": "west"}]}})
    assert "models.scout" in both and "either provider" in both and "not both" in both
    neither = _check(tmp_path, {"scout": {"model": "scout"}})
    assert "models.scout" in neither and "provider: required" in neither
    unknown = _check(
        tmp_path, {"scout": {"deployments": [{"provider": "east"}, {"provider": "mars"}]}}
    )
    assert "models.scout.deployments.1.provider: unknown provider 'mars'" in unknown
    assert "known: east, west" in unknown
    twice = _check(
        tmp_path, {"scout": {"deployments": [{"provider": "east"}, {"provider": "east"}]}}
    )
    assert "east named twice" in twice
    empty = _check(tmp_path, {"scout": {"deployments": []}})
    assert "models.scout.deployments" in empty


def test_check_asks_each_deployment_and_one_can_be_forced(gateway_factory, tmp_path) -> None:
    with serve_app(key_echoing_upstream()) as port:
        config = {
            "providers": {
                "east": {"kind": "sim", "sim": {"scout": {"reply": "OK"}}},
                "west": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"},
            },
            "models": {
                "scout": {"deployments": [{"provider": "east"}, {"provider": "west"}]},
            },
            "routes": {"chat": {"targets": ["scout"]}},
        }
        path = tmp_path / "check.yaml"
        path.write_text(yaml.safe_dump(config))
        # a standby's rejected key does not hide behind a healthy primary
        result = turnout_cli("check", "-c", str(path), "--json")
        rows = {row["model"]: row for row in json.loads(result.stdout)}
        assert result.returncode == 1, result.stdout + result.stderr
        assert rows["scout@east"]["status"] == "OK"
        assert rows["scout@west"]["status"] == "FAIL"
        assert rows["scout@west"]["provider"] == "west"
        # a client (an operator) may force one deployment by its key
        gateway = gateway_factory(config)
        client = sdk_client(gateway)
        text, headers = _ask(client, model="scout@east")
        assert (text, headers["x-turnout-deployment"]) == ("OK", "east")
        with pytest.raises(openai.APIStatusError) as refused:
            _ask(client, model="scout@west")
        assert refused.value.status_code == 503
        assert "scout@west: auth(401)" in str(refused.value)
