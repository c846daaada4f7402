"""Bad input gets a clear error in OpenAI's shape with the right status; the process keeps
serving. Bad config names the file and key path. Keys never leak."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import yaml

from tests.conftest import sim_config
from tests.upstreams import key_echoing_upstream, serve_app

ROUTES = {"chat": {"targets": ["primary"]}}


@pytest.fixture
def gateway(gateway_factory):
    return gateway_factory(sim_config({"primary": {"reply": "fine"}}, ROUTES))


def _error(result) -> dict:
    body = result.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]


def test_invalid_json_is_a_400_in_openai_shape(gateway) -> None:
    result = gateway.post("/v1/chat/completions", b'{"model": "chat", "messages": [')
    assert result.status == 400
    error = _error(result)
    assert error["type"] == "invalid_request_error"
    assert "not valid JSON" in error["message"]


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        (b'{"model": "chat"}', "messages", "'messages' is a required property"),
        (b'{"model": "chat", "messages": []}', "messages", "non-empty"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model", "'model'"),
        (
            b'{"model": "chat", "messages": [{"role": "wizard", "content": "x"}]}',
            "messages[0].role",
            "role",
        ),
        (
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "temperature": 9}',
            "temperature",
            "between",
        ),
        (b"[1, 2]", None, "JSON object"),
    ],
)
def test_malformed_requests_name_the_parameter(gateway, body, param, needle) -> None:
    result = gateway.post("/v1/chat/completions", body)
    assert result.status == 400
    error = _error(result)
    assert error["param"] == param
    assert needle in error["message"]


def test_sdk_sees_missing_messages_and_unknown_route(gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="no-such-route", messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.status_code == 404
    assert "no-such-route" in missing.value.message
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="chat", messages=[])
    assert bad.value.status_code == 400


def test_unknown_endpoint_and_method_in_openai_shape(gateway) -> None:
    assert _error(gateway.get("/v1/nope"))["type"] == "not_found_error"
    result = gateway.get("/v1/chat/completions")
    assert result.status == 405
    assert "not allowed" in _error(result)["message"]


def test_process_keeps_serving_after_bad_input(gateway) -> None:
    for _ in range(20):
        gateway.post("/v1/chat/completions", b"\xff\xfe garbage")
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    answer = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "fine"


def _serve_config(tmp_path: Path, config: dict) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "turnout.cli.main", "serve", "--config", str(path), "--port", "0"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("config", "key_path"),
    [
        ({"providers": {"p": {"kind": "openai"}}}, "providers.p"),
        ({"providers": {"p": {"kind": "nosuch", "base_url": "http://x"}}}, "providers.p.kind"),
        (sim_config({"a": {}}, {"chat": {"targets": ["a", "ghost"]}}), "routes.chat.targets.1"),
        (
            sim_config({"a": {}}, {"chat": {"targets": ["a"], "timeout": {"ttft": "soon"}}}),
            "routes.chat.timeout.ttft",
        ),
        (
            {
                "providers": {
                    "p": {"kind": "openai", "base_url": "http://x", "api_key": "sk-literal"}
                }
            },
            "providers.p.api_key",
        ),
        ({"server": {"port": "eighty"}}, "server.port"),
    ],
)
def test_config_errors_name_file_and_key_path(tmp_path, config, key_path) -> None:
    result = _serve_config(tmp_path, config)
    assert result.returncode == 2, result.stderr
    assert str(tmp_path / "bad.yaml") in result.stderr
    assert key_path in result.stderr, result.stderr


def test_literal_key_is_refused_without_being_echoed(tmp_path) -> None:
    config = {
        "providers": {
            "p": {"kind": "openai", "base_url": "http://x", "api_key": "sk-literal-DO-NOT-PRINT"}
        }
    }
    result = _serve_config(tmp_path, config)
    assert result.returncode == 2
    assert "${" in result.stderr  # says how to do it right
    assert "DO-NOT-PRINT" not in result.stderr + result.stdout


def test_provider_key_never_appears_in_logs_or_responses(gateway_factory) -> None:
    secret = "sk-test-0123456789abcdefSECRET"
    with serve_app(key_echoing_upstream()) as port:
        config = {
            "providers": {
                "leaky": {
                    "kind": "openai",
                    "base_url": f"http://127.0.0.1:{port}/v1",
                    "api_key": "${LEAKY_KEY}",
                },
                "sim": {"kind": "sim", "sim": {"backup": {"reply": "from backup"}}},
            },
            "models": {"primary": {"provider": "leaky"}, "backup": {"provider": "sim"}},
            "routes": {"chat": {"targets": ["primary", "backup"]}},
            "log_level": "debug",
        }
        gateway = gateway_factory(config, env={"LEAKY_KEY": secret})
        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        answer = raw.parse()
        assert answer.choices[0].message.content == "from backup"
        assert raw.headers["x-turnout-fallback"].startswith("primary=auth(401)")
        forced = gateway.post(
            "/v1/chat/completions",
            b'{"model": "primary", "messages": [{"role": "user", "content": "hi"}]}',
        )
        health = gateway.get("/health/providers")
    exposed = [
        gateway.log(),
        raw.http_response.text,
        str(dict(raw.headers)),
        forced.body.decode(),
        health.body.decode(),
    ]
    # once the key was rejected, the model is skipped as misconfigured, not retried
    assert forced.status == 503
    assert "primary: misconfigured" in forced.json()["error"]["message"]
    for text in exposed:
        assert secret not in text
        assert secret[:8] not in text
    assert health.json()["providers"]["leaky"]["state"] == "misconfigured"


def test_wrong_method_is_a_405_naming_the_allowed_one(gateway) -> None:
    result = gateway.get("/v1/chat/completions")
    assert result.status == 405
    assert result.headers["Allow"] == "POST"
    assert _error(result)["type"] == "invalid_request_error"


def test_unknown_paths_and_methods_on_the_anthropic_endpoint_in_anthropic_shape(gateway) -> None:
    for result, status in (
        (gateway.get("/v1/messages"), 405),
        (gateway.post("/v1/messages/nope", b"{}"), 404),
    ):
        assert result.status == status
        body = result.json()
        assert body["type"] == "error"
        assert set(body["error"]) == {"type", "message"}


def test_a_body_over_the_limit_is_a_413_and_the_gateway_keeps_serving(gateway) -> None:
    huge = b'{"model": "chat", "messages": [{"role": "user", "content": "' + b"x" * (33 << 20)
    result = gateway.post("/v1/chat/completions", huge + b'"}]}')
    assert result.status == 413
    assert "larger than" in _error(result)["message"]
    assert gateway.get("/health").status == 200


def test_a_port_in_use_is_a_clear_error_not_a_traceback(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(sim_config({"a": {}}, {"chat": {"targets": ["a"]}})))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "turnout.cli.main", "serve", "--config", str(path)]
            + ["--port", str(port)],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "TURNOUT_DATA_DIR": str(tmp_path / "data")},
        )
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
