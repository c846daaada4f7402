"""The scenarios (`turnout scenario`), each run as a user runs it, and the simulated clock
(turnout.clock) they stand on."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import ledger_rows, sim_config, turnout_cli
from turnout import clock
from turnout.config import parse_config
from turnout.gateway import Gateway
from turnout.scenarios import catalogue
from turnout.scenarios.report import duration
from turnout.scenarios.runner import SEED
from turnout.server import GatewayServer

SCENARIOS = catalogue.names()


def test_every_scenario_folder_is_listed_with_its_story() -> None:
    result = turnout_cli("scenario", "list")
    assert result.returncode == 0, result.stderr
    assert "expired-key" in SCENARIOS
    for name in SCENARIOS:
        assert f"{name}  {catalogue.load(name).story}" in result.stdout


def test_an_unknown_scenario_is_refused_naming_the_known_ones() -> None:
    result = turnout_cli("scenario", "run", "no-such-story")
    assert result.returncode == 2
    assert "no scenario 'no-such-story'" in result.stderr and "expired-key" in result.stderr


@pytest.fixture(scope="module", params=SCENARIOS)
def played(request: Any, tmp_path_factory: Any) -> tuple[str, dict[str, Any], list[Any]]:
    """Each scenario run once at its default speed: its JSON report and its ledger rows."""
    name = request.param
    data_dir = tmp_path_factory.mktemp(name)
    result = turnout_cli(
        "scenario", "run", name, "--report", "json", "--data-dir", str(data_dir), timeout=170
    )
    assert result.returncode == 0, result.stderr + result.stdout[-3000:]
    return name, json.loads(result.stdout), ledger_rows("sqlite", str(data_dir / "turnout.db"))


def test_a_scenario_holds_its_expected_outcome(played: tuple[str, Any, list[Any]]) -> None:
    name, report, rows = played
    scenario = catalogue.load(name)
    assert report["expect"] == {"ok": True, "failed": []}
    # every call of the traffic script reached the gateway: one ledger row each
    assert report["requests"] == len(scenario.traffic.calls(random.Random(SEED))) == len(rows)
    # the figures are the ledger's
    assert report["spend_usd"] == pytest.approx(sum(r.cost_usd for r in rows), abs=1e-5)
    assert report["baseline_usd"] == pytest.approx(sum(r.baseline_cost_usd for r in rows), abs=1e-5)
    served = {m: v["requests"] for m, v in report["models"].items()}
    assert sum(served.values()) == sum(r.status == 200 for r in rows)
    assert report["ttft_ms"]["p50"] <= report["ttft_ms"]["p95"]
    # each figure the expectation names was checked against a figure that exists
    for path in scenario.expect().get("figures", {}):
        value: Any = report
        for part in path.split("."):
            value = value[part]
        assert isinstance(value, int | float)


def _expired_key_costs_more_than_a_healthy_day_and_is_alerted(
    report: dict[str, Any], rows: list[Any]
) -> None:
    extra = report["extra"]
    expired_at = report["changes"]["scout key expires"]
    assert report["client_failures"] == 0 and report["ledger_not_ok"] == 0
    # Scout served the morning, Haiku everything after the key expired
    assert set(report["models"]) == {"scout", "haiku"}
    assert extra["requests_after_expiry"] == report["models"]["haiku"]["requests"]
    assert extra["requests_after_expiry"] > 0 and report["models"]["scout"]["requests"] > 0
    # the first request after expiry met the 401 and fell back: OpenRouter's words in its row
    late = sorted((r for r in rows if r.model == "haiku"), key=lambda r: r.started_at)
    assert late[0].attempts and "auth" in late[0].attempts[0]["reason"]
    # the alert: within a minute of simulated time, and delivered to the webhook
    alerts = [a for a in report["alerts"] if a["rule"] == "misconfigured" and a["firing"]]
    assert alerts and "No cookie auth credentials found" in alerts[0]["message"]
    assert 0 <= alerts[0]["at"] - expired_at <= 60
    assert extra["alert_after_expiry_s"] == pytest.approx(alerts[0]["at"] - expired_at, abs=0.1)
    assert report["webhook_deliveries"] >= 1
    # what it cost: the ledger's tokens at Scout's price are the healthy day
    healthy = sum(0.20 * (r.prompt_tokens + r.completion_tokens) / 1e6 for r in rows)
    assert extra["healthy_day_usd"] == pytest.approx(healthy, rel=1e-4)
    assert extra["extra_cost_usd"] == pytest.approx(report["spend_usd"] - healthy, abs=1e-5)
    assert extra["extra_cost_ratio"] == pytest.approx(report["spend_usd"] / healthy, abs=0.01)
    assert f"{extra['extra_cost_ratio']}x the healthy day" in extra["headline"]


def _start(name: str, rows: list[Any]) -> float:
    """The run's simulated epoch at time 0, within a few simulated seconds: the first row's
    start less its call's time in the script."""
    first_call = catalogue.load(name).traffic.calls(random.Random(SEED))[0]
    return min(r.started_at for r in rows) - first_call.at


def _upgrade_rollback_rolls_the_candidate_back_and_every_run_completes(
    report: dict[str, Any], rows: list[Any]
) -> None:
    extra = report["extra"]
    assert report["client_failures"] == 0 and report["ledger_not_ok"] == 0
    assert extra["runs_completed"] == extra["pipeline_runs"] == 150
    # the gateway's own move, on the objective stage 4's 500s breach, within one stage
    (rollback,) = [e for e in report["events"] if e.get("action") == "rolled_back"]
    assert rollback["objective"] == "error_rate" and rollback["observed"] > rollback["limit"]
    took = rollback["figures"]["candidate"]["requests"]
    assert 0 < took <= 200 and extra["candidate_requests_to_rollback"] == took
    # the candidate answered free text only: every stage-4 answer is the current model's,
    # schema-checked, and each of the candidate's stage-4 attempts failed with a 500
    json_rows = [r for r in rows if r.output_check is not None]
    assert len(json_rows) == 150 and {r.model for r in json_rows} == {"llama-31-70b"}
    assert all(r.output_check == "ok" for r in json_rows)
    on_candidate = [r for r in json_rows if r.attempts]
    assert on_candidate and extra["stage_4_failed_over"] == len(on_candidate)
    assert all(r.attempts[0]["reason"] == "server_error(500)" for r in on_candidate)
    assert report["models"]["llama-33-70b"]["requests"] > 0
    # after the rollback no request was sent to the candidate (the started ones finished)
    start = _start(report["scenario"], rows)
    after = [r for r in rows if r.started_at - start > rollback["at"] + 1]
    assert after and not any(
        r.model == "llama-33-70b" or any(a["model"] == "llama-33-70b" for a in r.attempts)
        for r in after
    )
    assert report["webhook_deliveries"] == 2  # started, rolled back: told to the webhook


def _fallback_tier_holds_availability_through_limits_outage_and_burst(
    report: dict[str, Any], rows: list[Any]
) -> None:
    extra = report["extra"]
    assert extra["availability"] >= 0.995
    assert extra["availability"] == round(1 - report["client_failures"] / len(rows), 4)
    # the fallback tier served from every region; none of us-east's answers in its outage
    regions = {r.provider for r in rows if r.model == "llama"}
    assert regions == {"us-east", "us-west", "eu-west"}
    down, up = report["changes"]["us-east outage"], report["changes"]["us-east back"]
    start = _start(report["scenario"], rows)
    in_outage = [r for r in rows if down + 60 < r.started_at - start < up - 60]
    assert in_outage and not any(r.provider == "us-east" for r in in_outage)
    # the last resorts: stored answers to identical questions, and answers after a wait
    stale = [r for r in rows if r.outcome == "stale"]
    assert len(stale) == extra["stale_answers"] > 0 and not any(r.stream for r in stale)
    assert extra["queued_answers"] > 0
    # every fallback was published: the JSONL sink's events, and the same on the stream
    assert extra["fallback_events_published"] == report["fallbacks"]
    if extra["fallback_events_on_stream"] is not None:  # Redis reachable
        assert extra["fallback_events_on_stream"] == extra["fallback_events_published"]
    assert report["fallback_rate"] == pytest.approx(report["fallbacks"] / len(rows), abs=1e-4)


def test_the_html_and_table_reports(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    # the page's shape only: fast (its figures are checked at the default speed above)
    result = turnout_cli(
        "scenario", "run", "expired-key", "--speed", "5000", "--report", "html",
        "--out", str(page), timeout=170,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    text = page.read_text()
    assert text.startswith("<!doctype html>") and "expired key cost USD" in text
    # self-contained: nothing fetched from elsewhere
    assert "<script" not in text and 'src="' not in text and "<link" not in text


def test_the_reports_durations_are_told_for_people() -> None:
    """split-limits' forty minutes were `0.666667 h`."""
    told = [duration(s) for s in (0.4, 39.75, 59.96, 90, 2400, 3599, 9000, 86400)]
    assert told == ["0.4 s", "39.8 s", "1 min", "1.5 min", "40 min", "1 h", "2.5 h", "24 h"]


# --- the simulated clock ----------------------------------------------------------------------


@pytest.fixture
async def fast_clock() -> AsyncIterator[float]:
    speed = 3_600.0  # an hour in a second
    # from a whole hour: the sim's fixed windows of an hour then start with the test
    clock.run_faster(speed, start=time.time() // 3600 * 3600)
    try:
        yield speed
    finally:
        clock.run_real()


def test_the_default_clock_is_the_real_one() -> None:
    assert clock.now is time.time and clock.monotonic is time.monotonic and clock.speed == 1.0


async def test_an_hours_rate_limit_window_passes_in_simulated_time(fast_clock: float) -> None:
    """The sim allows one request an hour; the gateway learns the window from its headers.
    On the real clock the third request would wait an hour: on the scaled one, the sim's window
    and the gateway's cooldown both end a simulated hour later."""
    behaviour = {"reply": "hello", "ratelimit_limit": 1, "ratelimit_reset": "1h"}
    config = sim_config({"scout": behaviour}, {"chat": {"targets": ["scout"]}})
    config["auth"] = {"required": False}
    config["ledger"] = {"backend": "off"}
    gateway = Gateway(parse_config(config))
    async with GatewayServer(gateway, "127.0.0.1", 0) as server:
        client = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{server.port}/v1", api_key="unused", max_retries=0
        )
        ask = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        first = await client.chat.completions.create(**ask)
        assert first.choices[0].message.content == "hello"
        began = clock.monotonic()
        with pytest.raises(openai.APIStatusError) as refused:  # the window is used up
            await client.chat.completions.create(**ask)
        assert "rate_limited" in str(refused.value)
        while clock.monotonic() < began + 3700:  # a simulated hour and a bit: the next window
            await asyncio.sleep(0.01)
        third = await client.chat.completions.create(**ask)
        assert third.choices[0].message.content == "hello"
        await client.close()


def test_the_simulated_clock_changes_speed_and_skips_ahead_without_going_back() -> None:
    clock.run_faster(1000)
    try:
        before, mono = clock.now(), clock.monotonic()
        clock.set_speed(20)
        assert clock.speed == 20 and clock.now() >= before and clock.monotonic() >= mono
        clock.advance(3600)  # the night skipped: an hour on, at once
        assert clock.now() >= before + 3600 and clock.monotonic() >= mono + 3600
    finally:
        clock.run_real()


def _scout_primary_saves_against_haiku_only_with_every_request_answered(
    report: dict[str, Any], rows: list[Any]
) -> None:
    extra = report["extra"]
    assert report["client_failures"] == 0 and extra["success_rate"] == 1.0
    # the savings are the ledger's: the same tokens at Haiku's price are the baseline
    haiku_only = sum((r.prompt_tokens + 5 * r.completion_tokens) / 1e6 for r in rows)
    assert report["baseline_usd"] == pytest.approx(haiku_only, rel=1e-4)
    assert report["savings_share"] >= 0.9
    # Scout served the day; Haiku caught its 502s and 429s and the requests forced to it
    assert report["models"]["scout"]["requests"] > 900
    fell_back = [r for r in rows if r.model == "haiku" and r.route == "assistant"]
    assert fell_back and all(r.attempts[0]["model"] == "scout" for r in fell_back)
    forced = [r for r in rows if r.route == "haiku"]
    assert forced and all(r.model == "haiku" and not r.attempts for r in forced)
    assert extra["forced_requests"] == len(forced)
    # the long documents were served (Scout's window holds them) and save the least
    assert extra["document_requests"] > 0
    assert extra["document_savings_share"] < extra["routed_savings_share"]
    assert any(r.model == "scout" and r.prompt_tokens > 20_000 for r in rows)


def _split_limits_never_fails_half_way_and_uses_both_models(
    report: dict[str, Any], rows: list[Any]
) -> None:
    extra = report["extra"]
    assert report["client_failures"] == 0 and extra["client_429s"] == 0
    # every use of the feature: its plan and its coaching, both answered, one session each
    sessions = {r.session for r in rows}
    assert len(sessions) == extra["uses"] == extra["uses_completed"] == len(rows) // 2
    assert extra["uses_failed_half_way"] == 0
    # the overflow of each step went to the other model, so both steps used both
    for step in ("plan", "coaching"):
        assert {r.model for r in rows if r.route == step} == {"mini", "full"}
    # gpt-4.1's minute was the bottleneck: the old wiring would have left uses half-way
    assert extra["old_wiring_uses_failed_half_way"] > 0
    assert 0 < extra["full_capacity_used"] <= 1 and 0 < extra["mini_capacity_used"] <= 1
    assert extra["paced_elsewhere"] > 0  # pacing, not 429s, moved the overflow
    assert extra["upstream_429s"] <= 10


# each scenario's own figures, checked after its run (besides its expect.yaml)
OWN_FIGURES = {
    "expired-key": _expired_key_costs_more_than_a_healthy_day_and_is_alerted,
    "upgrade-rollback": _upgrade_rollback_rolls_the_candidate_back_and_every_run_completes,
    "fallback-tier": _fallback_tier_holds_availability_through_limits_outage_and_burst,
    "scout-primary": _scout_primary_saves_against_haiku_only_with_every_request_answered,
    "split-limits": _split_limits_never_fails_half_way_and_uses_both_models,
}


def test_the_scenarios_own_figures(played: tuple[str, Any, list[Any]]) -> None:
    name, report, rows = played
    OWN_FIGURES[name](report, rows)
