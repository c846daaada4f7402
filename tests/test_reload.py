"""Hot reload: SIGHUP, `turnout reload` (POST /admin/reload) and `serve --watch` install a new
config while requests are in flight; an invalid one is refused and the old one keeps serving.

Two configs alternate: A routes `chat` to model alpha on provider `pa`, B to model beta on
provider `pb`. Every reload therefore builds a new provider and retires the old one, which
must stay open until the last request that started on it has finished."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.conftest import GatewayProcess, sdk_client, turnout_cli
from tests.test_keys import Keys
from tests.upstreams import shared_sim

# slow enough that streams are still running when a reload lands (about 0.2 s each)
ALPHA = {"reply": "alpha answered " + "word " * 20, "tokens_per_second": 120}
BETA = {"reply": "beta answered " + "word " * 20, "tokens_per_second": 120}


def _config(sim: Any, version: str) -> dict[str, Any]:
    model, provider = ("alpha", "pa") if version == "A" else ("beta", "pb")
    return {
        "providers": {provider: {"kind": "openai", "base_url": sim.base_url}},
        "models": {model: {"provider": provider}},
        "routes": {"chat": {"targets": [model]}},
    }


def _config_path(gateway: GatewayProcess, tmp_path: Path) -> Path:
    return tmp_path / f"turnout-{gateway.port}.yaml"  # where start_gateway wrote it


def _write(path: Path, config: dict[str, Any]) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(yaml.safe_dump(config))
    partial.replace(path)  # whole, as an editor's save or a deploy would


def _version(gateway: GatewayProcess) -> dict[str, Any]:
    result = gateway.get("/health/providers")
    assert result.status == 200, result.body
    return result.json()["config"]


def _wait_for_version(gateway: GatewayProcess, old: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version = _version(gateway)["version"]
        if version != old:
            return version
        time.sleep(0.1)
    raise AssertionError(f"the config version stayed {old}:\n{gateway.log()}")


def _answer(gateway: GatewayProcess) -> tuple[str, str, str]:
    """(content, answering model, config version) of one whole request."""
    raw = sdk_client(gateway).chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hello"}]
    )
    content = raw.parse().choices[0].message.content or ""
    return content, raw.headers["x-turnout-model"], raw.headers["x-turnout-config"]


def test_ten_reloads_during_a_thousand_requests_lose_none(gateway_factory, tmp_path) -> None:
    """The must-show: 1,000 requests (half streamed) at concurrency 16 while the config is
    reloaded ten times: none fails, and each is served wholly by one config version."""
    with shared_sim({"alpha": ALPHA, "beta": BETA}) as sim:
        gateway = gateway_factory(_config(sim, "A"))
        path = _config_path(gateway, tmp_path)
        results: list[tuple[str, str, str]] = []
        failures: list[str] = []
        reloads: list[str] = []
        done = threading.Event()

        async def one(client: openai.AsyncOpenAI, i: int) -> None:
            messages = [{"role": "user", "content": f"request {i}"}]
            try:
                if i % 2:
                    async with client.chat.completions.with_streaming_response.create(
                        model="chat", messages=messages, stream=True
                    ) as response:
                        chunks = [c async for c in await response.parse()]
                        text = "".join(
                            c.choices[0].delta.content or "" for c in chunks if c.choices
                        )
                        headers = response.headers
                else:
                    raw = await client.chat.completions.with_raw_response.create(
                        model="chat", messages=messages
                    )
                    text, headers = raw.parse().choices[0].message.content or "", raw.headers
                results.append((text, headers["x-turnout-model"], headers["x-turnout-config"]))
            except Exception as exc:  # noqa: BLE001 - every failure is collected and shown
                failures.append(f"request {i}: {type(exc).__name__}: {exc}")

        async def load() -> None:
            client = openai.AsyncOpenAI(
                base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=30
            )
            limit = asyncio.Semaphore(16)

            async def limited(i: int) -> None:
                async with limit:
                    await one(client, i)

            await asyncio.gather(*(limited(i) for i in range(1000)))
            await client.close()

        def reload_ten_times() -> None:
            # spread over the run: the CLI (POST /admin/reload) and SIGHUP, alternately
            while len(results) < 50 and not done.is_set():
                time.sleep(0.05)
            for n in range(10):
                _write(path, _config(sim, "B" if n % 2 == 0 else "A"))
                if n % 2 == 0:
                    reloaded = turnout_cli("reload", "--url", gateway.url)
                    assert reloaded.returncode == 0, reloaded.stderr
                    reloads.append(reloaded.stdout)
                else:
                    before = _version(gateway)["version"]
                    gateway.process.send_signal(signal.SIGHUP)
                    reloads.append(_wait_for_version(gateway, before))
                time.sleep(0.3)

        reloader = threading.Thread(target=reload_ten_times)
        reloader.start()
        try:
            asyncio.run(load())
        finally:
            done.set()
            reloader.join(60)

        assert failures == [], failures[:5]
        assert len(results) == 1000 and len(reloads) == 10
        served_by: dict[str, set[str]] = {}
        for text, model, version in results:
            assert text.startswith(f"{model} answered"), (text, model)
            served_by.setdefault(version, set()).add(model)
        # each version served with its own model only, and both versions served requests
        assert len(served_by) == 2, served_by
        assert all(len(models) == 1 for models in served_by.values()), served_by
        assert _answer(gateway)[1] == "alpha"  # the tenth reload went back to A
        assert "failed, still serving" not in gateway.log()


def test_an_invalid_config_is_refused_and_the_old_one_keeps_serving(
    gateway_factory, tmp_path
) -> None:
    with shared_sim({"alpha": ALPHA, "beta": BETA}) as sim:
        gateway = gateway_factory(_config(sim, "A"))
        path = _config_path(gateway, tmp_path)
        before = _version(gateway)["version"]

        broken = _config(sim, "B")
        broken["routes"]["chat"]["targets"] = ["nonexistent"]
        _write(path, broken)
        refused = turnout_cli("reload", "--url", gateway.url)
        assert refused.returncode == 1
        assert str(path) in refused.stderr and "routes.chat" in refused.stderr, refused.stderr
        content, model, version = _answer(gateway)
        assert (model, version) == ("alpha", before) and content.startswith("alpha answered")

        # a file that is not YAML at all, by SIGHUP: logged with the file, still serving
        path.write_text("routes: [unclosed\n")
        gateway.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "not valid YAML" not in gateway.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = gateway.log()
        assert f"config reload from {path} failed" in log and "not valid YAML" in log, log
        assert _answer(gateway)[1:] == ("alpha", before)
        assert _version(gateway)["version"] == before

        # fixed again: the next reload takes it
        _write(path, _config(sim, "B"))
        assert turnout_cli("reload", "--url", gateway.url).returncode == 0
        assert _answer(gateway)[1] == "beta"


def test_serve_watch_reloads_a_changed_file(gateway_factory, tmp_path) -> None:
    with shared_sim({"alpha": ALPHA, "beta": BETA}) as sim:
        gateway = gateway_factory(_config(sim, "A"), args=("--watch",))
        before = _version(gateway)["version"]
        assert _answer(gateway)[1] == "alpha"
        _write(_config_path(gateway, tmp_path), _config(sim, "B"))
        after = _wait_for_version(gateway, before)
        content, model, version = _answer(gateway)
        assert (model, version) == ("beta", after) and content.startswith("beta answered")


def test_health_of_models_that_remain_is_kept(gateway_factory, tmp_path) -> None:
    with shared_sim({"alpha": ALPHA, "beta": BETA}) as sim:
        config = _config(sim, "A")
        config["models"]["beta"] = {"provider": "pa"}
        config["routes"]["chat"]["targets"] = ["alpha", "beta"]
        config["health"] = {"breaker": {"consecutive_failures": 2, "open_for": "60s"}}
        gateway = gateway_factory(config)
        sim.set("alpha", error_rate={"500": 1.0})
        for _ in range(3):
            assert _answer(gateway)[1] == "beta"
        states = {t["model"]: t["state"] for t in _targets(gateway)}
        assert states["alpha"] == "open"

        config["routes"]["fresh"] = {"targets": ["beta"]}  # a change elsewhere
        _write(_config_path(gateway, tmp_path), config)
        reloaded = turnout_cli("reload", "--url", gateway.url, "--json")
        assert reloaded.returncode == 0, reloaded.stderr
        assert '"changed": true' in reloaded.stdout
        states = {t["model"]: t["state"] for t in _targets(gateway)}
        assert states["alpha"] == "open"  # what health learned survives the reload
        assert _answer(gateway)[1] == "beta"


def _targets(gateway: GatewayProcess) -> list[dict[str, Any]]:
    return gateway.get("/health/providers").json()["routes"]["chat"]["targets"]


def test_a_section_read_at_start_says_it_needs_a_restart(gateway_factory, tmp_path) -> None:
    with shared_sim({"alpha": ALPHA, "beta": BETA}) as sim:
        gateway = gateway_factory(_config(sim, "A"))
        config = _config(sim, "B")
        config["health"] = {"breaker": {"consecutive_failures": 9}}
        _write(_config_path(gateway, tmp_path), config)
        reloaded = turnout_cli("reload", "--url", gateway.url)
        assert reloaded.returncode == 0
        assert "only on a restart: health" in reloaded.stderr
        assert _answer(gateway)[1] == "beta"  # the rest applied


def test_reload_needs_an_admin_key_when_auth_is_on(gateway_factory, tmp_path) -> None:
    with shared_sim({"alpha": ALPHA, "beta": BETA}) as sim:
        config = {**_config(sim, "A"), "auth": {"required": True}}
        keys = Keys(tmp_path, config)
        _, plain = keys.create("app")
        _, admin = keys.create("ops", "--admin")
        gateway = gateway_factory(config)
        _write(_config_path(gateway, tmp_path), {**_config(sim, "B"), "auth": {"required": True}})
        for key in (None, plain):
            refused = turnout_cli("reload", "--url", gateway.url, *(("--key", key) if key else ()))
            assert refused.returncode == 1, refused.stderr
            assert "admin key" in refused.stderr or "API key" in refused.stderr, refused.stderr
        reloaded = turnout_cli("reload", "--url", gateway.url, "--key", admin)
        assert reloaded.returncode == 0, reloaded.stderr
        assert "reloaded" in reloaded.stdout


def test_every_worker_reloads(gateway_factory, tmp_path) -> None:
    with shared_sim({"alpha": ALPHA, "beta": BETA}) as sim:
        gateway = gateway_factory(_config(sim, "A"), args=("--workers", "2"))
        workers = _workers(gateway, want=2)
        assert len({w["version"] for w in workers}) == 1
        before = workers[0]["version"]

        # asked of one worker over HTTP: it reloads, then the supervisor tells the other
        _write(_config_path(gateway, tmp_path), _config(sim, "B"))
        assert turnout_cli("reload", "--url", gateway.url).returncode == 0
        after = _all_on_new_version(gateway, before)

        # SIGHUP to the supervisor reaches every worker
        _write(_config_path(gateway, tmp_path), _config(sim, "A"))
        gateway.process.send_signal(signal.SIGHUP)
        assert _all_on_new_version(gateway, after) == before  # A again: A's version
        for _ in range(10):  # fresh connections: either worker answers, both with alpha
            assert _answer(gateway)[1:] == ("alpha", before)


def _workers(gateway: GatewayProcess, want: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = _version(gateway).get("workers", [])
        if len(workers) >= want:
            return workers
        time.sleep(0.1)
    raise AssertionError(f"fewer than {want} workers reported:\n{gateway.log()}")


def _all_on_new_version(gateway: GatewayProcess, old: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        versions = {w["version"] for w in _workers(gateway, want=2)}
        if len(versions) == 1 and old not in versions:
            return versions.pop()
        time.sleep(0.1)
    raise AssertionError(f"the workers did not all leave {old}:\n{gateway.log()}")


def test_a_reload_brings_new_secrets_into_log_redaction(gateway_factory, tmp_path) -> None:
    """A key first named by a reloaded config is redacted from log lines like the others:
    here a provider with a bug raises an exception whose message holds its key."""
    secret = "sk-echo-rotated-9f8e7d6c5b4a39281706"
    env = {"ROTATED_KEY": secret, "TURNOUT_PLUGINS": "tests.echo_kind"}
    with shared_sim({"alpha": ALPHA, "beta": BETA}) as sim:
        gateway = gateway_factory(_config(sim, "A"), env=env)
        config = _config(sim, "A")
        config["providers"]["echo"] = {"kind": "echo", "api_key": "${ROTATED_KEY}"}
        config["models"]["echoer"] = {"provider": "echo"}
        _write(_config_path(gateway, tmp_path), config)
        assert turnout_cli("reload", "--url", gateway.url).returncode == 0
        client = sdk_client(gateway)
        messages = [{"role": "user", "content": "crash with key"}]
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="echoer", messages=messages)
        gateway.stop()
        log = gateway.log()
        assert "a bug that shows the key" in log, log  # the traceback was logged...
        assert secret not in log and secret[:12] not in log, log  # ...without the key
