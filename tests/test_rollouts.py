"""Canary rollouts: the model-upgrade story as a test, the judge's arithmetic, control and
state kept across a restart.

The story: a 13-stage pipeline on route `research`; stages 1 to 3 and 5 to 13 are free text,
stage 4 asks for a 40-field JSON object. A new model answers free text well and breaks stage
4. Started as a canary, it must be rolled back by the gateway itself, with no pipeline run
failing on the way; a good new model must go through every stage and become the primary."""

from __future__ import annotations

import json
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
import yaml

from tests.conftest import GatewayProcess, ledger_rows, turnout_cli
from tests.upstreams import shared_sim
from turnout.config.rollout import SLO
from turnout.model import ErrorClass, Outcome
from turnout.rollouts.judge import Window, binomial_tail, judge

FIELDS = [f"field_{i:02d}" for i in range(40)]
SCHEMA = {
    "type": "object",
    "properties": {name: {"type": "string"} for name in FIELDS},
    "required": FIELDS,
    "additionalProperties": False,
}
STAGES = 13
JSON_STAGE = 4

PRIMARY = {"reply": "The current model's answer.", "ttft": 0.01, "tokens_per_second": 5000}
FALLBACK = {"reply": "The fallback's answer.", "ttft": 0.01, "tokens_per_second": 5000}
GOOD_NEW = {"reply": "The new model's answer.", "ttft": 0.01, "tokens_per_second": 5000}
# answers free text well and breaks stage 4: with invalid JSON, or with a 500
BROKEN_NEW = {**GOOD_NEW, "malformed_rate": 1.0}
FAILING_NEW = {**GOOD_NEW, "json_error_status": 500}


CURRENT_PRICE = {"input": 0.6, "output": 0.8}  # USD per million tokens
FALLBACK_PRICE = {"input": 1.0, "output": 5.0}
NEW_PRICE = {"input": 0.3, "output": 0.5}


def _config(sim: Any, rollout: dict[str, Any]) -> dict[str, Any]:
    return {
        "providers": {"sim": {"kind": "openai", "base_url": sim.base_url}},
        "models": {
            "llama-31-70b": {"provider": "sim", "supports": ["json"], "price": CURRENT_PRICE},
            "haiku": {"provider": "sim", "supports": ["json"], "price": FALLBACK_PRICE},
            "llama-33-70b-fast": {"provider": "sim", "supports": ["json"], "price": NEW_PRICE},
        },
        "routes": {
            "research": {
                "targets": ["llama-31-70b", "haiku"],
                "rollout": {"candidate": "llama-33-70b-fast", **rollout},
            }
        },
    }


def _run_pipeline(gateway: GatewayProcess, run: int) -> list[tuple[int, str]]:
    """One pipeline run (one session): (stage, answering model) per stage. Raises on any
    error the client would see, or a stage-4 answer that is not the 40-field object."""
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    session = {"x-turnout-session": f"pipeline-run-{run}"}
    answered = []
    for stage in range(1, STAGES + 1):
        extra: dict[str, Any] = {}
        if stage == JSON_STAGE:
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "report", "schema": SCHEMA, "strict": True},
            }
        raw = client.chat.completions.with_raw_response.create(
            model="research",
            messages=[{"role": "user", "content": f"Stage {stage} of run {run}."}],
            extra_headers=session,
            **extra,
        )
        content = raw.parse().choices[0].message.content or ""
        if stage == JSON_STAGE:
            import json

            assert sorted(json.loads(content)) == FIELDS, content[:200]
        answered.append((stage, raw.headers["x-turnout-model"]))
    return answered


def _run_many(gateway: GatewayProcess, runs: range) -> list[list[tuple[int, str]]]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda run: _run_pipeline(gateway, run), runs))


def _rollout(gateway: GatewayProcess) -> dict[str, Any]:
    result = gateway.get("/admin/rollouts")
    assert result.status == 200, result.body
    (state,) = result.json()
    return state


@pytest.mark.parametrize(
    ("candidate", "objective"),
    [(BROKEN_NEW, "invalid_output_rate"), (FAILING_NEW, "error_rate")],
    ids=["invalid-json", "http-500"],
)
def test_a_candidate_that_breaks_stage_4_is_rolled_back_with_no_failed_run(
    gateway_factory, tmp_path, candidate: dict[str, Any], objective: str
) -> None:
    min_requests = 200
    rollout = {"stages": [20, 50, 100], "min_requests": min_requests}
    models = {"llama-31-70b": PRIMARY, "haiku": FALLBACK, "llama-33-70b-fast": candidate}
    with shared_sim(models) as sim:
        config = _config(sim, rollout)
        gateway = gateway_factory(config)
        assert _rollout(gateway)["status"] == "running"

        runs = _run_many(gateway, range(200))  # every run completes: _run_pipeline asserts it
        state = _rollout(gateway)
        assert state["status"] == "rolled_back", state
        rolled_back = state["history"][-1]
        assert rolled_back["action"] == "rolled_back"
        assert rolled_back["objective"] == objective
        took = rolled_back["candidate"]["requests"]
        assert 0 < took <= min_requests, rolled_back  # within one stage's min_requests
        print(f"rolled back after {took} candidate requests")  # (the figure for the notes)

        # the candidate answered whole runs (sessions stick), never stage 4
        on_candidate = [run for run in runs if run[0][1] == "llama-33-70b-fast"]
        assert on_candidate, "the canary never got a run"
        for run in on_candidate:
            assert dict(run)[JSON_STAGE] == "llama-31-70b"  # failed over, invisibly
        # after the rollback, nothing goes to the candidate
        for run in _run_many(gateway, range(1000, 1020)):
            assert {model for _, model in run} == {"llama-31-70b"}

        # the decision survives a restart: the candidate stays out
        gateway.stop()
        again = gateway_factory(config)
        assert _rollout(again)["status"] == "rolled_back"
        assert {m for _, m in _run_pipeline(again, 2000)} == {"llama-31-70b"}


def test_a_good_candidate_goes_through_every_stage_and_becomes_the_primary(
    gateway_factory,
) -> None:
    rollout = {"stages": [25, 50, 100], "min_requests": 40}
    models = {"llama-31-70b": PRIMARY, "haiku": FALLBACK, "llama-33-70b-fast": GOOD_NEW}
    with shared_sim(models) as sim:
        gateway = gateway_factory(_config(sim, rollout))
        run = 0
        while _rollout(gateway)["status"] == "running" and run < 400:
            _run_many(gateway, range(run, run + 16))
            run += 16
        state = _rollout(gateway)
        assert state["status"] == "promoted", state
        actions = [move["action"] for move in state["history"]]
        assert actions == ["started", "stage_entered", "stage_entered", "promoted"], actions
        # the candidate is now the route's primary: every request goes to it first
        for answered in _run_many(gateway, range(5000, 5010)):
            assert {model for _, model in answered} == {"llama-33-70b-fast"}


def test_operators_control_a_rollout(gateway_factory, tmp_path) -> None:
    rollout = {"stages": [10, 100], "min_requests": 1000}
    models = {"llama-31-70b": PRIMARY, "haiku": FALLBACK, "llama-33-70b-fast": GOOD_NEW}
    with shared_sim(models) as sim:
        gateway = gateway_factory(_config(sim, rollout))
        url = ("--url", gateway.url)

        status = turnout_cli("rollout", "status", *url)
        assert status.returncode == 0, status.stderr
        assert "research" in status.stdout and "running" in status.stdout

        promoted = turnout_cli("rollout", "promote", "research", *url, "--json")
        assert promoted.returncode == 0, promoted.stderr
        assert '"percent": 100.0' in promoted.stdout and '"stage": 1' in promoted.stdout
        rolled = turnout_cli("rollout", "rollback", "research", *url)
        assert rolled.returncode == 0 and "rolled_back" in rolled.stdout
        assert {m for _, m in _run_pipeline(gateway, 1)} == {"llama-31-70b"}

        again = turnout_cli("rollout", "rollback", "research", *url)
        assert again.returncode == 1 and "not running" in again.stderr
        unknown = turnout_cli("rollout", "start", "nope", *url)
        assert unknown.returncode == 1 and "no rollout" in unknown.stderr
        started = turnout_cli("rollout", "start", "research", *url, "--json")
        assert started.returncode == 0 and '"status": "running"' in started.stdout

        providers = gateway.get("/health/providers").json()
        assert providers["routes"]["research"]["rollout"]["status"] == "running"


def test_a_rollout_config_names_a_model_the_route_does_not_use(gateway_factory) -> None:
    with shared_sim({"llama-31-70b": PRIMARY}) as sim:
        config = _config(sim, {})
        config["routes"]["research"]["rollout"]["candidate"] = "haiku"  # already a target
        with pytest.raises(RuntimeError, match="rollout.candidate"):
            gateway_factory(config)
        config["routes"]["research"]["rollout"] = {"candidate": "x", "stages": [50, 20]}
        with pytest.raises(RuntimeError, match="stages must rise|unknown model"):
            gateway_factory(config)


# --- the judge --------------------------------------------------------------------------------


def _outcome(ok: bool, cls: ErrorClass | None = None, ttft: float = 0.1) -> Outcome:
    return Outcome("r", "m", "p", ok, error_class=cls, ttft=ttft if ok else None, latency=ttft)


def test_binomial_tail_matches_the_sum_it_stands_for() -> None:
    for k, n, p in ((2, 2, 0.02), (5, 65, 0.01), (9, 117, 0.02), (8, 10, 0.5)):
        exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
        assert binomial_tail(k, n, p) == pytest.approx(exact, rel=1e-9)
    assert binomial_tail(1, 100, 0.02) == 1.0  # at or below the mean: never a breach


def test_a_plain_breach_rolls_back_before_the_stage_ends() -> None:
    slo, candidate, primary = SLO(), Window(), Window()
    candidate.add(_outcome(False, ErrorClass.SERVER_ERROR))
    assert judge(candidate, primary, slo, 200).action == "wait"  # one failure: bad luck maybe
    candidate.add(_outcome(False, ErrorClass.SERVER_ERROR))
    verdict = judge(candidate, primary, slo, 200)
    assert (verdict.action, verdict.objective) == ("rollback", "error_rate")
    # failures the model is not to blame for count for nothing
    blameless = Window()
    for _ in range(50):
        blameless.add(_outcome(False, ErrorClass.RATE_LIMITED))
        blameless.add(_outcome(False, ErrorClass.CLIENT_ERROR))
    assert blameless.requests == 0 and judge(blameless, primary, slo, 10).action == "wait"


def test_a_stage_is_judged_whole_at_min_requests() -> None:
    slo = SLO(ttft_p95_ratio=1.5)
    primary = Window()
    for _ in range(100):
        primary.add(_outcome(True, ttft=0.2))
    fast, slow, tiny = Window(), Window(), Window()
    for _ in range(100):
        fast.add(_outcome(True, ttft=0.25))
        slow.add(_outcome(True, ttft=0.5))
        tiny.add(_outcome(True, ttft=0.001))
    assert judge(fast, primary, slo, 100).action == "promote"
    verdict = judge(slow, primary, slo, 100)
    assert (verdict.action, verdict.objective) == ("rollback", "ttft_p95_ratio")
    assert verdict.observed == 2.5
    assert judge(fast, primary, slo, 101).action == "wait"  # not yet min_requests
    # a ratio of tiny figures is noise: 3 ms against 1 ms is not "three times as slow"
    quick = Window()
    for _ in range(100):
        quick.add(_outcome(True, ttft=0.003))
    assert judge(quick, tiny, slo, 100).action == "promote"


def test_two_processes_sharing_redis_judge_one_rollout(gateway_factory, tmp_path) -> None:
    """Both gateways count into one rollout, the rollback made by either holds for both, and
    a process restarted with an empty data directory takes the fleet's state from Redis."""
    from tests.services import redis_url

    url = redis_url()  # (skips with a reason when no Redis can be had)
    rollout = {"stages": [30, 100], "min_requests": 300}
    models = {"llama-31-70b": PRIMARY, "haiku": FALLBACK, "llama-33-70b-fast": BROKEN_NEW}
    with shared_sim(models) as sim:
        config = _config(sim, rollout)
        config["state"] = {"backend": "redis", "url": url, "prefix": f"rollout-{uuid.uuid4().hex}"}
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        first = gateway_factory(config, env={"TURNOUT_DATA_DIR": str(tmp_path / "a")})
        second = gateway_factory(config, env={"TURNOUT_DATA_DIR": str(tmp_path / "b")})

        def run(i: int) -> list[tuple[int, str]]:
            return _run_pipeline(first if i % 2 else second, i)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(run, range(200)))
        deadline = time.monotonic() + 5  # the other process hears of the move within a second
        while time.monotonic() < deadline:
            states = [_rollout(g)["status"] for g in (first, second)]
            if states == ["rolled_back", "rolled_back"]:
                break
            time.sleep(0.1)
        assert states == ["rolled_back", "rolled_back"], states
        decided = _rollout(first)["history"][-1]
        assert decided["objective"] == "invalid_output_rate"
        # judged on the fleet's counts: more candidate requests than the deciding process saw
        counted = decided["candidate"]["requests"]
        assert 0 < counted <= 300
        assert decided["processes"] == 2, decided
        here = [_rollout(g)["candidate_requests_here"] for g in (first, second)]
        assert max(here) < counted, (here, counted)

        second.stop()
        (tmp_path / "c").mkdir()
        restarted = gateway_factory(config, env={"TURNOUT_DATA_DIR": str(tmp_path / "c")})
        assert _rollout(restarted)["status"] == "rolled_back"  # from Redis: no file there
        assert {m for _, m in _run_pipeline(restarted, 9000)} == {"llama-31-70b"}


# --- shadow mode -----------------------------------------------------------------------------


def _shadow_report(gateway: GatewayProcess, pairs: int, timeout: float = 20.0) -> dict[str, Any]:
    """The shadow's comparison once `pairs` copies have come back (they run after the answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = _rollout(gateway)["shadow"]
        if report["pairs"] >= pairs:
            return report
        time.sleep(0.1)
    raise AssertionError(f"only {report['pairs']} shadow pairs of {pairs}:\n{gateway.log()}")


def test_a_shadow_candidate_is_compared_and_never_seen(gateway_factory, tmp_path) -> None:
    rollout = {"mode": "shadow", "share": 100, "daily_cap_usd": 100}
    models = {"llama-31-70b": PRIMARY, "haiku": FALLBACK, "llama-33-70b-fast": BROKEN_NEW}
    with shared_sim(models) as sim:
        gateway = gateway_factory(_config(sim, rollout))
        runs = [_run_pipeline(gateway, i) for i in range(4)]  # 52 requests, 4 of them JSON
        for run in runs:  # every answer the clients got came from the route, none from the shadow
            assert {model for _, model in run} == {"llama-31-70b"}
        report = _shadow_report(gateway, pairs=4 * STAGES)
        assert report["invalid_output_rate"] == round(4 / (4 * STAGES), 4)
        assert any(flag.startswith("invalid_output_rate") for flag in report["flags"]), report
        assert report["error_rate"] == 0.0
        assert 0 < report["agreement"] < 1  # different words, same kind of answer
        assert report["candidate_cost_usd"] > 0 and report["primary_cost_usd"] > 0

        refused = turnout_cli("rollout", "promote", "research", "--url", gateway.url)
        assert refused.returncode == 1 and "shadow" in refused.stderr

        gateway.stop()
        rows = ledger_rows("sqlite", str(tmp_path / "turnout.db"))
        shadows = [r for r in rows if r.dialect == "shadow"]
        assert len(shadows) == 4 * STAGES
        assert {r.route for r in shadows} == {"research:shadow"}  # never the route's budget
        assert {r.key_id for r in shadows} == {None}  # nor the client's key
        assert {r.model for r in shadows} == {"llama-33-70b-fast"}
        invalid = [r for r in shadows if r.outcome != "ok"]
        assert len(invalid) == 4 and all("invalid_output" in (r.error or "") for r in invalid)
        clients = [r for r in rows if r.dialect == "openai"]
        assert len(clients) == 4 * STAGES and {r.model for r in clients} == {"llama-31-70b"}


def test_shadow_spend_stops_at_its_daily_cap(gateway_factory) -> None:
    rollout = {"mode": "shadow", "share": 100, "daily_cap_usd": 0.001}
    models = {"llama-31-70b": PRIMARY, "haiku": FALLBACK, "llama-33-70b-fast": GOOD_NEW}
    with shared_sim(models) as sim:
        config = _config(sim, rollout)
        config["models"]["llama-33-70b-fast"]["price"] = {"input": 10.0, "output": 10.0}
        gateway = gateway_factory(config)
        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        copies = 0
        for i in range(30):  # one at a time: each copy is counted before the next is asked
            client.chat.completions.create(
                model="research", messages=[{"role": "user", "content": f"question {i}"}]
            )
            report = _rollout(gateway)["shadow"]
            while report["pairs"] + report["capped"] < i + 1:
                time.sleep(0.05)
                report = _rollout(gateway)["shadow"]
            copies = report["pairs"]
        report = _rollout(gateway)["shadow"]
        assert report["capped"] > 0 and copies < 30, report
        per_copy = report["candidate_cost_usd"] / copies
        # the copy that crossed the cap is the last one sent
        assert report["spent_today_usd"] <= 0.001 + per_copy * 1.01, report
        assert report["spent_today_usd"] >= 0.001, report


# --- replay ---------------------------------------------------------------------------------


def test_replay_of_captured_traffic_reports_a_candidate_that_breaks_json(
    gateway_factory, tmp_path
) -> None:
    models = {"llama-31-70b": PRIMARY, "haiku": FALLBACK, "llama-33-70b-fast": BROKEN_NEW}
    with shared_sim(models) as sim:
        config = _config(sim, {})
        del config["routes"]["research"]["rollout"]
        config["routes"]["research"]["capture"] = {}
        gateway = gateway_factory(config)
        _run_many(gateway, range(8))  # 104 requests, 8 of them the 40-field JSON stage
        gateway.stop()
        path = tmp_path / "replay-config.yaml"
        path.write_text(yaml.safe_dump(config))
        html = tmp_path / "replay.html"
        env = {"TURNOUT_DATA_DIR": str(tmp_path)}
        args = ("--route", "research", "--candidate", "llama-33-70b-fast", "--config", str(path))
        result = turnout_cli(
            "replay", *args, "--format", "json", "--html", str(html), env=env, timeout=120
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["requests"] == 8 * STAGES
        assert summary["invalid_output_rate"] == round(8 / (8 * STAGES), 4)
        assert summary["success_rate"] == round(1 - 8 / (8 * STAGES), 4)
        assert summary["recorded_latency_p50_ms"] is not None  # joined with the ledger
        assert summary["cost_usd"] > 0 and summary["recorded_cost_usd"] > 0
        first = summary["disagreements"][0]
        assert first["failure"].startswith("invalid_output") or first["agreement"] < 0.5
        assert any(
            (d["failure"] or "").startswith("invalid_output") for d in summary["disagreements"]
        )
        page = html.read_text()
        assert "replay: research on llama-33-70b-fast" in page and "invalid_output" in page

        table = turnout_cli("replay", *args, env={**env, "COLUMNS": "100"})
        assert table.returncode == 0, table.stderr
        assert "invalid output" in table.stdout and "7.7%" in table.stdout  # 8 of 104
        assert "recorded:" in table.stdout and "candidate:" in table.stdout  # side by side
        limited = turnout_cli("replay", *args, "--limit", "13", "--format", "json", env=env)
        assert json.loads(limited.stdout)["requests"] == 13

        missing = turnout_cli(
            "replay", *args[:2], "--candidate", "nope", "--config", str(path), env=env
        )
        assert missing.returncode == 1 and "not a model" in missing.stderr


def test_rollout_moves_go_out_to_the_event_sinks(gateway_factory, tmp_path) -> None:
    models = {"llama-31-70b": PRIMARY, "haiku": FALLBACK, "llama-33-70b-fast": GOOD_NEW}
    out = tmp_path / "events.jsonl"
    with shared_sim(models) as sim:
        config = _config(sim, {"stages": [10, 100], "min_requests": 1000})
        config["sinks"] = [
            {"name": "file", "kind": "jsonl", "path": str(out), "events": ["rollout"]}
        ]
        gateway = gateway_factory(config)
        assert turnout_cli("rollout", "rollback", "research", "--url", gateway.url).returncode == 0
        gateway.stop()  # the sink's queue is drained on the way out
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["type"] for e in events] == ["rollout", "rollout"], events
    started, rolled = events
    assert started["action"] == "started" and rolled["action"] == "rolled_back"
    assert rolled["route"] == "research" and rolled["candidate"] == "llama-33-70b-fast"
