"""The commands a user runs: check, sim, demo, the tables of status, keys and report, and the
command line itself (and serve, everywhere else)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import openai
import yaml

from tests.conftest import free_port, http, sim_config, turnout_cli

TURNOUT = [sys.executable, "-m", "turnout.cli.main"]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return turnout_cli(*args, timeout=timeout)


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


def test_check_sends_an_embeddings_model_an_embedding(tmp_path: Path) -> None:
    config = sim_config(
        {"good": {"reply": "OK"}, "vectors": {"supports": ["embeddings"]}},
        {"chat": {"targets": ["good"]}, "embed": {"targets": ["vectors"]}},
        prices={"vectors": {"input": 0.02, "output": 0.0}},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _run("check", "--config", str(path), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {row["model"]: row for row in json.loads(result.stdout)}
    assert rows["vectors"]["status"] == "OK"
    assert rows["vectors"]["reply"].endswith(" dimensions")
    assert rows["vectors"]["prompt_tokens"] > 0 and rows["vectors"]["cost_usd"] > 0


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
    result = turnout_cli("demo", "--speed", "6", env={"COLUMNS": "80"}, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = " ".join(result.stdout[result.stdout.index("Summary:") :].split())  # unwrap
    assert "0 client-visible errors" in summary
    assert "server_error(500)" in summary
    # the health engine then routes around the dead and the throttled primary
    assert "open, skipped" in summary
    assert "rate_limited, skipped" in summary
    # in 80 columns, nothing cut; the route list is not taken for markup and lost
    _assert_fits(result.stdout, 80)
    assert "…" not in result.stdout
    assert "route chat = [scout ($0.30/M out), haiku ($5/M out)]" in " ".join(result.stdout.split())
    # the summary is lines, one fallback reason a line with its count, not a dict's repr
    assert not re.search(r"[{}]|Counter\(", summary)
    tail = result.stdout[result.stdout.index("Summary:") :].splitlines()
    for reason in ("server_error(500)", "open, skipped", "rate_limited, skipped"):
        assert any(re.fullmatch(rf"\s*{re.escape(reason)}\s+\d+", line) for line in tail), tail


def _assert_fits(output: str, width: int) -> None:
    too_long = [line for line in output.splitlines() if len(line) > width]
    assert not too_long, "\n".join(too_long)


def test_version_is_the_installed_one() -> None:
    result = turnout_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"turnout {version('turnout')}\n"


def _keys_config(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A config whose ledger (and so key table) is in tmp_path, as the gateway's will be."""
    config = sim_config(
        {"a-rather-long-model-name-for-a-table": {"reply": "OK"}, "haiku": {"reply": "OK"}},
        {"chat": {"targets": ["a-rather-long-model-name-for-a-table", "haiku"]}},
        prices={"haiku": {"input": 1.0, "output": 5.0}},
    )
    config["auth"] = {"required": True}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, {"TURNOUT_DATA_DIR": str(tmp_path), "COLUMNS": "80"}


def _created(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    return fields["id"].strip(), fields["key"].strip()


def test_config_goes_before_or_after_the_arguments_and_a_reused_name_is_warned(
    tmp_path: Path,
) -> None:
    config, env = _keys_config(tmp_path)
    name = "billing [prod] service"  # square brackets: rich must not take them for markup
    # --config after the sub-command's own arguments, and before them
    first, _ = _created(
        turnout_cli("keys", "create", name, "--rpm", "5", "--config", str(config), env=env)
    )
    assert "warning" not in turnout_cli("keys", "-c", str(config), "list", env=env).stderr
    # the same name again: created (a rotation is exactly this), with a warning naming the key
    # that already has it, so that the operator can revoke it or think again
    second_run = turnout_cli("keys", "--config", str(config), "create", name, env=env)
    second, _ = _created(second_run)
    assert f"an active key is already named {name!r} ({first})" in second_run.stderr
    assert turnout_cli("keys", "revoke", first, "-c", str(config), env=env).returncode == 0
    third_run = turnout_cli("keys", "create", name, "-c", str(config), env=env)
    _created(third_run)
    assert f"({second})" in third_run.stderr and first not in third_run.stderr  # active only
    other = turnout_cli("keys", "create", "other", "-c", str(config), env=env)
    assert other.stderr == ""
    for listing in (
        turnout_cli("keys", "list", "--config", str(config), env=env),
        turnout_cli("keys", "-c", str(config), "list", env=env),
    ):
        assert listing.returncode == 0, listing.stderr
        _assert_fits(listing.stdout, 80)
        assert first in listing.stdout and second in listing.stdout  # whole: `revoke` takes them
        assert "[prod]" in listing.stdout  # the name may wrap between its words; not lost
        assert "…" not in listing.stdout.replace("…\n", "")  # (only a key's prefix ends in …)


def test_tables_fit_80_columns_and_keep_ids_whole(tmp_path: Path, gateway_factory) -> None:
    """status, report and check in an 80-column terminal: no line longer, nothing cut with an
    ellipsis, and the ids other commands take (key ids, model names) whole on one line."""
    config, env = _keys_config(tmp_path)
    _, admin = _created(turnout_cli("keys", "-c", str(config), "create", "ops", "--admin", env=env))
    app_id, app = _created(
        turnout_cli("keys", "-c", str(config), "create", "a-service-with-a-long-name", env=env)
    )
    gateway = gateway_factory(yaml.safe_load(config.read_text()))
    client = openai.OpenAI(base_url=gateway.base_url, api_key=app, max_retries=0)
    for model in ("chat", "haiku"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    status = turnout_cli("status", "--url", gateway.url, "--key", admin, env=env, timeout=30)
    gateway.stop()  # the ledger is whole once the gateway has stopped
    report = turnout_cli("report", "--since", "1h", "-c", str(config), env=env)
    check = turnout_cli("check", "-c", str(config), env=env, timeout=120)
    model = "a-rather-long-model-name-for-a-table"
    for result, whole in ((status, model), (report, app_id), (report, model), (check, model)):
        assert result.returncode == 0, result.stdout + result.stderr
        _assert_fits(result.stdout, 80)
        assert "…" not in result.stdout
        pattern = rf"(^|\s){re.escape(whole)}(\s|$)"
        assert re.search(pattern, result.stdout, re.MULTILINE), result.stdout
    assert "OK" in check.stdout and "(active)" in status.stdout
