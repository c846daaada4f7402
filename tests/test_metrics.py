"""GET /metrics: a real gateway whose primary fails over to a good fallback, real SDK requests,
then one scrape parsed with prometheus_client's own parser: the fallback counter, the TTFT
histogram with the OTel GenAI labels, the breaker gauge, token usage, cost and savings, the
rate-limit headroom; the same over `turnout serve --workers 2`; and who may scrape."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import HTTPResult, ask, http, ledger_rows, sdk_client, sim_config, turnout_cli
from tests.upstreams import shared_sim

PRICES = {"primary": {"input": 3.0, "output": 15.0}, "backup": {"input": 0.5, "output": 1.5}}
FAILING = {"error_rate": {500: 1.0}}
BACKUP = {"reply": "backup answered", "tokens_per_second": 5000}
HEADROOM = {**BACKUP, "ratelimit_remaining": 900, "ratelimit_reset": "60s"}
ROUTES = {"chat": {"targets": ["primary", "backup"], "baseline": "primary"}}
BREAKER = {"breaker": {"consecutive_failures": 2, "open_for": "60s"}}
GEN_AI = {
    "gen_ai_operation_name": "chat",
    "gen_ai_request_model": "chat",
    "gen_ai_response_model": "backup",
}
TTFT_BOUNDS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]


class Scrape:
    """One /metrics answer, parsed by prometheus_client's parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def samples(self, name: str, **labels: str) -> list[Any]:
        """Samples named `name` (a family's name, or a sample's like `x_bucket`) whose labels
        include `labels`."""
        found = []
        for family in self.families.values():
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    found.append(sample)
        return found

    def value(self, name: str, **labels: str) -> float:
        """The sum of the matching samples (0 when there are none)."""
        return sum(s.value for s in self.samples(name, **labels))


def scrape(gateway: Any, key: str | None = None) -> Scrape:
    result = _get(gateway.url + "/metrics", key)
    assert result.status == 200, result.body
    content_type = {k.lower(): v for k, v in result.headers.items()}["content-type"]
    assert content_type.startswith("text/plain; version=")  # the text exposition format
    return Scrape(result.body.decode())


def _get(url: str, key: str | None = None) -> HTTPResult:
    request = urllib.request.Request(url)
    if key is not None:
        request.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return HTTPResult(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as exc:
        return HTTPResult(exc.code, dict(exc.headers.items()), exc.read())


def _sim_gateway_config(**extra: Any) -> dict[str, Any]:
    config = sim_config({"primary": FAILING, "backup": HEADROOM}, ROUTES, prices=PRICES)
    return {**config, "health": BREAKER, **extra}


def test_a_scrape_after_a_failover_shows_what_happened(gateway_factory, tmp_path: Path) -> None:
    gateway = gateway_factory(_sim_gateway_config())
    for stream in (False, False, False, True, True, True):
        text, headers = ask(gateway, stream=stream)
        assert text == "backup answered" and headers["x-turnout-model"] == "backup"
    probe_name = f"no-such-route-{uuid.uuid4().hex}"
    with pytest.raises(openai.APIStatusError):
        sdk_client(gateway).chat.completions.create(
            model=probe_name, messages=[{"role": "user", "content": "hi"}]
        )

    metrics = scrape(gateway)
    assert metrics.value("turnout_requests_total", route="chat", model="backup", outcome="ok") == 6
    # every request passed over the primary: failed until its breaker opened, then skipped
    fell = {"route": "chat", "from_model": "primary", "to_model": "backup"}
    assert metrics.value("turnout_fallbacks_total", **fell, reason="server_error") == 2
    assert metrics.value("turnout_fallbacks_total", **fell, reason="open") == 4
    assert metrics.value("turnout_breaker_state", model="primary", provider="sim") == 2
    assert metrics.value("turnout_breaker_state", model="backup", provider="sim") == 0

    # the OTel GenAI histograms, with the conventions' names, labels and buckets
    assert metrics.families["gen_ai_server_time_to_first_token_seconds"].type == "histogram"
    ttft = dict(GEN_AI, gen_ai_provider_name="sim")
    assert metrics.value("gen_ai_server_time_to_first_token_seconds_count", **ttft) == 3
    bounds = [
        float(s.labels["le"])
        for s in metrics.samples("gen_ai_server_time_to_first_token_seconds_bucket", **ttft)
    ]
    assert bounds == [*TTFT_BOUNDS, float("inf")]
    duration = metrics.samples("gen_ai_client_operation_duration_seconds_count", **ttft)
    assert [s.value for s in duration] == [6]
    for kind in ("input", "output"):
        usage = dict(ttft, gen_ai_token_type=kind)
        assert metrics.value("gen_ai_client_token_usage_count", **usage) == 6
        assert metrics.value("gen_ai_client_token_usage_sum", **usage) > 0

    # headroom from the provider's x-ratelimit-* headers, read at scrape time
    headroom = {"model": "backup", "kind": "requests"}
    assert metrics.value("turnout_ratelimit_remaining", **headroom) == 900
    assert metrics.samples("turnout_ledger_queue_depth")
    assert metrics.value("turnout_events_dropped_total", subscriber="metrics") == 0
    assert metrics.samples("turnout_events_dropped_total", subscriber="ledger")

    # a client's made-up route is one `unknown` series, never a series of its own
    assert metrics.value("turnout_requests_total", route="unknown", outcome="error") == 1
    assert probe_name not in metrics.text
    cost = metrics.value("turnout_cost_usd_total", route="chat", model="backup")
    saved = metrics.value("turnout_savings_usd", route="chat", model="backup")

    gateway.stop()  # drains the ledger: its rows are what the counters must agree with
    rows = [r for r in ledger_rows("sqlite", str(tmp_path / "turnout.db")) if r.model == "backup"]
    assert len(rows) == 6
    assert cost == pytest.approx(sum(r.cost_usd for r in rows))
    assert cost > 0
    assert saved == pytest.approx(sum(r.baseline_cost_usd - r.cost_usd for r in rows))
    assert saved > 0  # the primary is the route's dearer baseline


def _create_key(config_path: Path, tmp_path: Path, name: str, *options: str) -> str:
    env = {"TURNOUT_DATA_DIR": str(tmp_path)}
    result = turnout_cli("keys", "--config", str(config_path), "create", name, *options, env=env)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    return lines["key"].strip()


def test_metrics_need_an_admin_key_unless_public(gateway_factory, tmp_path: Path) -> None:
    config = _sim_gateway_config(auth={"required": True})
    config_path = tmp_path / "keys.yaml"
    config_path.write_text(yaml.safe_dump(config))
    plain = _create_key(config_path, tmp_path, "app")
    admin = _create_key(config_path, tmp_path, "ops", "--admin")
    gateway = gateway_factory(config)

    for key in (None, "sk-not-a-key-of-this-gateway"):
        refused = _get(gateway.url + "/metrics", key)
        assert refused.status == 401
        error = refused.json()["error"]  # OpenAI's error shape
        assert error["type"] == "authentication_error" and error["message"]
        assert "sk-not-a-key" not in refused.body.decode()
    assert _get(gateway.url + "/metrics", plain).status == 403
    assert "turnout_breaker_state" in scrape(gateway, admin).families

    public = gateway_factory(_sim_gateway_config(auth={"required": True}, metrics={"public": True}))
    assert "turnout_breaker_state" in scrape(public).families


def test_metrics_can_be_turned_off(gateway_factory) -> None:
    gateway = gateway_factory(_sim_gateway_config(metrics={"enabled": False}))
    ask(gateway)
    assert gateway.get("/metrics").status == 404
    subscribers = gateway.get("/health").json()["events"]["subscribers"]
    assert "metrics" not in subscribers  # nothing is recorded either


# --- turnout serve --workers 2 -------------------------------------------------------------


def _workers_config(sim: Any) -> dict[str, Any]:
    return {
        "providers": {"sim": {"kind": "openai", "base_url": sim.base_url}},
        "models": {
            "primary": {"provider": "sim", "price": PRICES["primary"]},
            "backup": {"provider": "sim", "price": PRICES["backup"]},
        },
        "routes": ROUTES,
        "health": BREAKER,
        "state": {"backend": "redis", "prefix": f"turnout-test-{uuid.uuid4().hex[:8]}"},
    }


def _recorded_per_worker(gateway: Any, want: int = 2, tries: int = 200) -> dict[int, int]:
    """pid -> requests its metrics subscriber recorded, from /health on fresh connections."""
    seen: dict[int, int] = {}
    for _ in range(tries):
        health = gateway.get("/health").json()
        seen[health["pid"]] = health["events"]["subscribers"]["metrics"]["delivered"]
        if len(seen) >= want:
            break
    return seen


def test_one_scrape_totals_every_worker(gateway_factory) -> None:
    with shared_sim({"primary": FAILING, "backup": BACKUP}) as sim:
        gateway = gateway_factory(_workers_config(sim), args=("--workers", "2"))
        body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
        plain = streamed = 0
        for _ in range(40):  # each on a new connection: the kernel spreads them
            result = http("POST", gateway.base_url + "/chat/completions", body.encode())
            assert result.status == 200
            plain += 1
            if plain >= 8:
                per_worker = _recorded_per_worker(gateway)
                if len(per_worker) == 2 and all(per_worker.values()):
                    break
        for _ in range(4):  # a new SDK client each: a new connection each
            text, _ = ask(gateway, stream=True)
            assert text == "backup answered"
            streamed += 1
        per_worker = _recorded_per_worker(gateway)
        assert len(per_worker) == 2 and all(per_worker.values()), per_worker
        total = plain + streamed
        assert sum(per_worker.values()) == total

        for _ in range(3):  # any worker answers the scrape, each with every worker's figures
            metrics = scrape(gateway)
            assert metrics.value("turnout_requests_total", route="chat", outcome="ok") == total
            assert metrics.value("turnout_fallbacks_total", from_model="primary") == total
            ttft = dict(GEN_AI, gen_ai_provider_name="sim")
            count = metrics.value("gen_ai_server_time_to_first_token_seconds_count", **ttft)
            assert count == streamed
            usage = dict(ttft, gen_ai_token_type="output")
            assert metrics.value("gen_ai_client_token_usage_count", **usage) == total
            assert metrics.value("turnout_cost_usd_total", model="backup") > 0
            # health is shared through Redis: the breaker is open in every worker's view
            assert metrics.value("turnout_breaker_state", model="primary") == 2
            assert len(metrics.samples("turnout_breaker_state", model="primary")) == 1
            assert metrics.samples("turnout_ledger_queue_depth")
            assert metrics.value("turnout_events_dropped_total", subscriber="metrics") == 0
            assert metrics.samples("turnout_events_dropped_total", subscriber="metrics")


def test_the_workers_metric_files_go_with_the_run(gateway_factory) -> None:
    with shared_sim({"primary": FAILING, "backup": BACKUP}) as sim:
        gateway = gateway_factory(_workers_config(sim), args=("--workers", "2"))
        ask(gateway)
        environ = Path(f"/proc/{next(iter(_recorded_per_worker(gateway)))}/environ")
        variables = dict(v.split("=", 1) for v in environ.read_text().split("\0") if "=" in v)
        shared = Path(variables["PROMETHEUS_MULTIPROC_DIR"])
        assert any(shared.glob("counter_*.db"))
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(timeout=30) == 0
        assert not shared.exists()  # the supervisor removed it as it exited
