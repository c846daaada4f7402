"""Failover: with the primary failing in each way a real provider fails, every client request
still succeeds from the next target, and the headers say why."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import ask, free_port, sdk_client, sim_config
from tests.upstreams import fixed_error_upstream, serve_app

MESSAGES = [{"role": "user", "content": "hello"}]
BACKUP = {"reply": "backup answered", "tokens_per_second": 5000}
FAST_TIMEOUTS = {"connect": "1s", "ttft": "500ms", "total": "2s"}


def _route(**extra) -> dict:
    return {"chat": {"targets": ["primary", "backup"], "timeout": FAST_TIMEOUTS, **extra}}


PRIMARY_FAULTS = {
    "500": ({"error_rate": {500: 1.0}}, "server_error(500)"),
    "502": ({"error_rate": {502: 1.0}}, "server_error(502)"),
    "503": ({"error_rate": {503: 1.0}}, "server_error(503)"),
    "529": ({"error_rate": {529: 1.0}}, "overloaded(529)"),
    "429": ({"rate_limit_rate": 1.0, "retry_after": 20}, "rate_limited(429)"),
    "outage": ({"outages": [{"start": 0, "end": "1h", "status": 503}]}, "server_error(503)"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("fault", sorted(PRIMARY_FAULTS))
def test_error_statuses_fail_over(gateway_factory, fault, stream) -> None:
    behaviour, reason = PRIMARY_FAULTS[fault]
    gateway = gateway_factory(sim_config({"primary": behaviour, "backup": BACKUP}, _route()))
    text, headers = ask(gateway, stream=stream)
    assert text == "backup answered"
    assert headers["x-turnout-model"] == "backup"
    assert headers["x-turnout-attempts"] == "2"
    assert headers["x-turnout-fallback"] == f"primary={reason}"
    # later requests: failures are tried again until the breaker opens; a 429 cools the
    # model down for its Retry-After, so it is skipped without an attempt
    for _ in range(2):
        text, headers = ask(gateway, stream=stream)
        assert text == "backup answered"
        if fault == "429":
            assert headers["x-turnout-attempts"] == "1"
            assert headers["x-turnout-fallback"].startswith("primary=rate_limited(")
        else:
            assert headers["x-turnout-fallback"] == f"primary={reason}"


def test_hang_past_ttft_fails_over_on_streams(gateway_factory) -> None:
    gateway = gateway_factory(
        sim_config({"primary": {"hang_rate": 1.0}, "backup": BACKUP}, _route())
    )
    text, headers = ask(gateway, stream=True)
    assert text == "backup answered"
    assert headers["x-turnout-fallback"] == "primary=timeout(ttft)"


def test_slow_first_token_fails_over_on_streams(gateway_factory) -> None:
    slow = {"ttft": "1500ms", "reply": "too late"}
    gateway = gateway_factory(sim_config({"primary": slow, "backup": BACKUP}, _route()))
    text, headers = ask(gateway, stream=True)
    assert text == "backup answered"
    assert headers["x-turnout-fallback"] == "primary=timeout(ttft)"


def test_hang_past_total_fails_over_without_streaming(gateway_factory) -> None:
    gateway = gateway_factory(
        sim_config({"primary": {"hang_rate": 1.0}, "backup": BACKUP}, _route())
    )
    text, headers = ask(gateway, stream=False)
    assert text == "backup answered"
    assert headers["x-turnout-fallback"] == "primary=timeout(total)"


def test_stream_dropped_before_first_token_fails_over(gateway_factory) -> None:
    dropping = {"disconnect_rate": 1.0, "disconnect_after": 0}
    gateway = gateway_factory(sim_config({"primary": dropping, "backup": BACKUP}, _route()))
    text, headers = ask(gateway, stream=True)
    assert text == "backup answered"
    assert headers["x-turnout-fallback"] in {"primary=stream_broken", "primary=connection"}


def test_connection_refused_fails_over(gateway_factory) -> None:
    config = sim_config({"backup": BACKUP}, {})
    config["providers"]["dead"] = {
        "kind": "openai",
        "base_url": f"http://127.0.0.1:{free_port()}/v1",
    }
    config["models"]["primary"] = {"provider": "dead"}
    config["routes"] = _route()
    gateway = gateway_factory(config)
    for stream in (False, True):
        text, headers = ask(gateway, stream=stream)
        assert text == "backup answered"
        assert headers["x-turnout-fallback"] == "primary=connection"


def test_failure_after_content_is_an_explicit_error_not_a_truncation(gateway_factory) -> None:
    breaking = {
        "disconnect_rate": 1.0,
        "disconnect_after": 3,
        "reply": "one two three four five six",
    }
    gateway = gateway_factory(sim_config({"primary": breaking, "backup": BACKUP}, _route()))
    client = sdk_client(gateway)
    stream = client.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError) as error:
        for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received)  # content had started, so the failure could not fail over
    assert "stream failed" in str(error.value.message)


def test_retries_on_the_same_target_when_configured(gateway_factory) -> None:
    route = _route(retry={"attempts": 2, "backoff": "10ms"})
    gateway = gateway_factory(
        sim_config({"primary": {"error_rate": {500: 1.0}}, "backup": BACKUP}, route)
    )
    text, headers = ask(gateway, stream=False)
    assert text == "backup answered"
    assert headers["x-turnout-attempts"] == "3"


def test_all_targets_failing_gives_503_naming_each(gateway_factory) -> None:
    models = {
        "primary": {"error_rate": {500: 1.0}},
        "backup": {"rate_limit_rate": 1.0, "retry_after": 7},
    }
    gateway = gateway_factory(sim_config(models, _route()))
    client = sdk_client(gateway)
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="chat", messages=MESSAGES)
    assert failed.value.status_code == 503
    assert failed.value.response.headers["retry-after"] == "7"
    message = failed.value.message
    assert "primary: server_error(500)" in message
    assert "backup: rate_limited(429)" in message


def test_clients_own_400_is_returned_as_is_without_failover(gateway_factory) -> None:
    error = {
        "message": "Unsupported value: 'temperature' does not support 1.7 with this model.",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "unsupported_value",
    }
    with serve_app(fixed_error_upstream(400, error)) as port:
        config = sim_config({"backup": BACKUP}, {})
        config["providers"]["strict"] = {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{port}/v1",
        }
        config["models"]["primary"] = {"provider": "strict"}
        config["routes"] = _route()
        gateway = gateway_factory(config)
        client = sdk_client(gateway)
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="chat", messages=MESSAGES, temperature=1.7)
    assert bad.value.body["message"] == error["message"]
    assert bad.value.param == "temperature"
    assert bad.value.code == "unsupported_value"
    assert gateway.get("/health/providers").json()["models"]["backup"]["requests"] == 0


def test_context_length_error_moves_to_a_larger_window(gateway_factory) -> None:
    error = {
        "message": "This model's maximum context length is 8192 tokens.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    with serve_app(fixed_error_upstream(400, error)) as port:
        config = sim_config(
            {
                "medium": {"context_window": 8192, "reply": "medium"},
                "big": {"context_window": 200000, "reply": "big answered"},
            },
            {},
        )
        config["providers"]["small"] = {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}
        config["models"]["primary"] = {"provider": "small", "context_window": 8192}
        config["routes"] = {"chat": {"targets": ["primary", "medium", "big"]}}
        gateway = gateway_factory(config)
        raw = sdk_client(gateway).chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES
        )
    assert raw.parse().choices[0].message.content == "big answered"
    assert raw.headers["x-turnout-fallback"] == (
        "primary=context_length(400), medium=context_length(skipped)"
    )


def test_auth_failure_marks_provider_misconfigured_and_logs_error(gateway_factory) -> None:
    error = {
        "message": "Incorrect API key provided.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    with serve_app(fixed_error_upstream(401, error)) as port:
        config = sim_config({"backup": BACKUP}, {})
        config["providers"]["expired"] = {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{port}/v1",
        }
        config["models"]["primary"] = {"provider": "expired"}
        config["routes"] = _route()
        gateway = gateway_factory(config)
        text, headers = ask(gateway, stream=False)
    assert text == "backup answered"
    assert headers["x-turnout-fallback"] == "primary=auth(401)"
    health = gateway.get("/health/providers").json()
    assert health["providers"]["expired"]["state"] == "misconfigured"
    assert health["models"]["primary"]["state"] == "misconfigured"
    assert health["models"]["primary"]["last_error"]["class"] == "auth"
    error_lines = [line for line in gateway.log().splitlines() if " ERROR " in line]
    assert any("expired" in line and "misconfigured" in line for line in error_lines)


def test_missing_key_env_skips_the_model_visibly(gateway_factory) -> None:
    config = sim_config({"backup": BACKUP}, {})
    config["providers"]["keyless"] = {
        "kind": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key": "${TURNOUT_TEST_UNSET_KEY}",
    }
    config["models"]["primary"] = {"provider": "keyless"}
    config["routes"] = _route()
    gateway = gateway_factory(config)
    text, headers = ask(gateway, stream=False)
    assert text == "backup answered"
    assert "TURNOUT_TEST_UNSET_KEY is not set" in headers["x-turnout-fallback"]
    assert headers["x-turnout-attempts"] == "1"


def test_forcing_a_model_disables_failover(gateway_factory) -> None:
    gateway = gateway_factory(
        sim_config({"primary": {"error_rate": {500: 1.0}}, "backup": BACKUP}, _route())
    )
    client = sdk_client(gateway)
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="primary", messages=MESSAGES)
    assert failed.value.status_code == 503
    answer = client.chat.completions.create(model="backup", messages=MESSAGES)
    assert answer.choices[0].message.content == "backup answered"


def test_a_route_whose_every_model_is_misconfigured_is_a_503_not_a_500(gateway_factory) -> None:
    """A provider whose key variable is unset can never answer: nothing is expected back by
    itself, so the 503 has no Retry-After (it used to be an infinite one, and a 500)."""
    config = {
        "providers": {
            "keyless": {
                "kind": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key": "${TURNOUT_TEST_UNSET_KEY_VARIABLE}",
            }
        },
        "models": {"m": {"provider": "keyless"}},
        "routes": {"chat": {"targets": ["m"]}},
    }
    gateway = gateway_factory(config)
    body = b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}'
    result = gateway.post("/v1/chat/completions", body)
    assert result.status == 503, result.body
    assert "retry-after" not in {k.lower() for k in result.headers}
    assert b"misconfigured" in result.body
