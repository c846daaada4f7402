"""The commands a user runs: check, sim, demo (and serve, everywhere else)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import openai
import yaml

from tests.conftest import free_port, http, sim_config

TURNOUT = [sys.executable, "-m", "turnout.cli.main"]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TURNOUT, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_check_reports_every_model_and_fails_when_one_does(tmp_path: Path) -> None:
    config = sim_config(
        {"good": {"reply": "OK"}, "broken": {"error_rate": {500: 1.0}}},
        {"chat": {"targets": ["good", "broken"]}},
        prices={"good": {"input": 1.0, "output": 2.0}},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _run("check", "--config", str(path), "--json")
    assert result.returncode == 1, result.stderr
    rows = {row["model"]: row for row in json.loads(result.stdout)}
    good, broken = rows["good"], rows["broken"]
    assert good["status"] == "OK"
    assert good["reply"] == "OK"
    assert good["latency_ms"] >= good["ttft_ms"] > 0
    expected = (good["prompt_tokens"] * 1.0 + good["completion_tokens"] * 2.0) / 1_000_000
    assert good["cost_usd"] == round(expected, 8)
    assert broken["status"] == "FAIL"
    assert "server_error(500)" in broken["error"]

    table = _run("check", "--config", str(path))
    assert "good" in table.stdout
    assert "FAIL" in table.stdout


def test_sim_command_serves_openai_compatible_answers(tmp_path: Path) -> None:
    sim_file = tmp_path / "sim.yaml"
    sim_file.write_text(yaml.safe_dump({"seed": 3, "models": {"m": {"reply": "simulated"}}}))
    port = free_port()
    process = subprocess.Popen(
        [*TURNOUT, "sim", "--config", str(sim_file), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if http("GET", f"http://127.0.0.1:{port}/v1/models", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        answer = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == "simulated"
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0]
    assert f"turnout sim listening on http://127.0.0.1:{port}/v1" in output


def test_sim_command_rejects_a_bad_file(tmp_path: Path) -> None:
    sim_file = tmp_path / "sim.yaml"
    sim_file.write_text(yaml.safe_dump({"models": {"m": {"error_rate": {500: 7}}}}))
    result = _run("sim", "--config", str(sim_file), "--port", str(free_port()), timeout=30)
    assert result.returncode == 2
    assert "models.m.error_rate" in result.stderr


def test_a_bad_sim_section_in_a_gateway_config_is_a_config_error(tmp_path: Path) -> None:
    """The sim's schema is the sim's (turnout/sim/schema.py), yet a bad `sim:` section of a
    provider still fails at load, naming the file and the key path, before anything starts."""
    config = tmp_path / "turnout.yaml"
    bad = {"kind": "sim", "sim": {"m": {"error_rate": {500: 7}}}}
    config.write_text(yaml.safe_dump({"providers": {"up": bad}}))
    for command in ("check", "serve"):
        result = _run(command, "--config", str(config), timeout=30)
        assert result.returncode == 2, result.stderr
        assert f"{config}: providers.up.sim.m.error_rate.500:" in result.stderr


def test_demo_tells_the_story_without_a_client_error() -> None:
    result = _run("demo", "--speed", "6")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = " ".join(result.stdout[result.stdout.index("Summary:") :].split())  # unwrap
    assert "0 client-visible errors" in summary
    assert "server_error(500)" in summary
    # the health engine then routes around the dead and the throttled primary
    assert "open, skipped" in summary
    assert "rate_limited, skipped" in summary
