"""Secrets never leave the gateway: not whole, not as a provider's masked echo, not as any
fragment of 8+ characters, in no field of an error, header, stream, health page, status
output, log line or capture. Unit tests of the redactors, then a real gateway process
behind an upstream that echoes its key in every way it can."""

from __future__ import annotations

import io
import json
import logging

import anthropic
import openai
import pytest

from tests.conftest import http, sdk_client, turnout_cli
from tests.upstreams import secret_echoing_upstream, serve_app, shared_sim
from turnout.accounting.capture import Redactor
from turnout.cli.common import RedactingFilter
from turnout.config import parse_config
from turnout.config.secrets import Secret, SecretRedactor, secrets_in

KEY = "sk-up-SECRET-X9f8e7d6c5b4a3F2E1D7654"
KEY_ENV = "TURNOUT_TEST_UPSTREAM_KEY"


def fragments(key: str, size: int = 8) -> set[str]:
    return {key[i : i + size] for i in range(len(key) - size + 1)}


def assert_no_fragment(text: str, key: str = KEY) -> None:
    leaked = sorted(f for f in fragments(key) if f in text)
    assert not leaked, f"key fragments leaked: {leaked[:3]} in {text[:400]!r}"


# --- the secret redactor ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"Incorrect API key provided: {KEY}",
        f"Incorrect API key provided: {KEY[:11]}****{KEY[-4:]}",  # OpenAI's masked echo
        f"key {KEY[:14]}***{KEY[-4:]}.",
        f"key {KEY[:12]}…{KEY[-4:]}",
        f"{KEY[5:20]}",  # a fragment from the middle
        f"POST https://generativelanguage.googleapis.com/v1beta/models/x?key={KEY}&alt=sse",
        f'{{"param": "{KEY}", "code": "key_{KEY[:14]}***"}}',
    ],
)
def test_redactor_removes_the_key_and_every_long_fragment(text: str) -> None:
    redacted = SecretRedactor([KEY])(text)
    assert_no_fragment(redacted)
    assert "[redacted]" in redacted


@pytest.mark.parametrize(
    "text",
    [
        "Incorrect API key provided: sk-other-0000000000001111",
        "the model is overloaded, try again later",
        f"a run of seven {KEY[:7]} is not a leak",
        "",
    ],
)
def test_redactor_leaves_other_text_alone(text: str) -> None:
    assert SecretRedactor([KEY])(text) == text


def test_a_dsn_loses_its_password_not_its_scheme() -> None:
    dsn = "postgresql://turnout:S3cretPassw0rd!x@db.internal:5432/ledger"
    redact = SecretRedactor([dsn])
    assert redact(f"cannot connect to {dsn}") == "cannot connect to [redacted]"
    assert redact("password S3cretPassw0rd!x leaked") == "password [redacted]!x leaked"
    assert redact("ledger backend postgresql on db.internal") == (
        "ledger backend postgresql on db.internal"
    )


def test_every_secret_of_a_config_is_gathered(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("T_KEY_A", "key-a-0123456789")
    monkeypatch.setenv("T_JWT", "jwt-secret-0123456789")
    monkeypatch.setenv("T_DSN", "postgresql://u:pw-0123456789@h/db")
    config = parse_config(
        {
            "providers": {
                "a": {"kind": "openai", "base_url": "http://x/v1", "api_key": "${T_KEY_A}"},
                "unset": {"kind": "openai", "base_url": "http://x/v1", "api_key": "${T_NOPE}"},
            },
            "auth": {"jwt": {"secret": "${T_JWT}"}},
            "ledger": {"backend": "postgres", "dsn": "${T_DSN}"},
        },
        str(tmp_path / "c.yaml"),
    )
    found = secrets_in(config)
    assert sorted(s.env_var for s in found) == ["T_DSN", "T_JWT", "T_KEY_A", "T_NOPE"]
    redact = SecretRedactor.of(found)
    assert redact("a key-a-0123456789 b jwt-secret-0123456789 c pw-0123456789") == (
        "a [redacted] b [redacted] c [redacted]"
    )


def test_the_log_filter_redacts_messages_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(SecretRedactor.of([Secret("K", KEY)])))
    logger = logging.getLogger("turnout.test_secrets")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("upstream said %s", f"bad key {KEY[:12]}****")
        try:
            raise ValueError(f"connect to http://h/?key={KEY} failed")
        except ValueError:
            logger.exception("request failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "upstream said bad key [redacted]" in output
    assert "ValueError" in output and "request failed" in output
    assert_no_fragment(output)


# --- capture's built-in rules --------------------------------------------------------------

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
CAPTURE_CASES = [
    # (text, what must be gone or None for "unchanged", what must stay)
    ("id AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE", "id "),
    ("temp ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A", "temp "),
    (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI",
        "aws_secret_access_key = ",
    ),
    ('"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"', "wJalrX", "SecretAccessKey"),
    ("gemini AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI ok", "AIzaSyDd", " ok"),
    (
        "Bearer " + JWT,
        "eyJhbGci",
        "Bearer ",
    ),
    ("login password=hunter2 then", "hunter2", "password="),
    ("passwd: correct-horse", "correct-horse", "passwd: "),
    ('{"pwd": "s3cr3t!"}', "s3cr3t!", '"pwd": "'),
    ("PASSWORD=Tr0ub4dor&3", "Tr0ub4dor", "PASSWORD="),
    ("ssn 078-05-1120 on file", "078-05-1120", " on file"),
    ("NI number JG 10 37 59 A", "JG 10 37 59 A", "NI number"),
    ("my key sk-live-0123456789abcdefXYZ", "sk-live", "my key "),
    # negatives: nothing to redact
    ("reset your password by email", None, None),
    ("AKIA is the prefix of AWS keys", None, None),
    ("an SSN never starts 000: 000-12-3456, nor 666: 666-12-3456", None, None),
    ("version 1.2.3 and eyJ alone", None, None),
    ("AIzaShort-key", None, None),
    ("aws secret rotation is 40 days", None, None),
    ("order GB123456A", None, None),
]


@pytest.mark.parametrize(("text", "gone", "kept"), CAPTURE_CASES)
def test_capture_default_rules(text: str, gone: str | None, kept: str | None) -> None:
    redactor = Redactor(["email", "card", "secret", "national_id"])
    redacted = redactor(text)
    if gone is None:
        assert redacted == text
    else:
        assert gone not in redacted and "[redacted]" in redacted
        assert kept in redacted


def test_capture_config_defaults_cover_credentials_and_national_ids() -> None:
    from turnout.config.schema import CaptureConfig

    redactor = Redactor(CaptureConfig().redact)
    assert redactor("x AKIAIOSFODNN7EXAMPLE 078-05-1120 password=a1") == (
        "x [redacted] [redacted] password=[redacted]"
    )


def test_capture_redacts_configured_secrets_whatever_the_rules() -> None:
    redactor = Redactor([], [Secret("K", KEY)])
    assert redactor({"a": [f"echo {KEY[:10]}****{KEY[-4:]}"]}) == {"a": ["echo [redacted]"]}


def test_capture_end_to_end_keeps_no_credential(gateway_factory, tmp_path) -> None:
    with shared_sim({"scout": {"reply": "noted, AKIAIOSFODNN7EXAMPLE"}}) as sim:
        config = {
            "providers": {
                "sim": {"kind": "openai", "base_url": sim.base_url},
                # configured but unused: its key is still a secret never to be captured
                "other": {
                    "kind": "openai",
                    "base_url": "http://127.0.0.1:9/v1",
                    "api_key": "${" + KEY_ENV + "}",
                },
            },
            "models": {"scout": {"provider": "sim"}},
            "routes": {"chat": {"targets": ["scout"], "capture": {}}},  # default rules
        }
        gateway = gateway_factory(config, env={KEY_ENV: KEY})
        prompt = (
            f"password=hunter2 ssn 078-05-1120 token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"
            f" google AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI key {KEY[:16]}..."
        )
        sdk_client(gateway).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": prompt}]
        )
        gateway.stop()
    line = json.loads((tmp_path / "captures" / "chat.jsonl").read_text().splitlines()[0])
    text = json.dumps(line)
    for gone in ("hunter2", "078-05-1120", "eyJhbGci", "AIzaSy", "AKIAIOSFODNN7EXAMPLE"):
        assert gone not in text
    assert_no_fragment(text)
    assert line["request"]["messages"][0]["content"].startswith("password=[redacted] ssn")


# --- a real gateway behind an upstream that echoes its key ---------------------------------


def _echo_config(port: int) -> dict:
    provider = {
        "kind": "openai",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "api_key": "${" + KEY_ENV + "}",
    }
    names = ("echo-400", "echo-stream-first", "echo-stream-late")
    models = {name: {"provider": "echo"} for name in names}
    models["echo-401"] = {"provider": "echo-auth"}  # its 401 takes only this provider out
    return {
        "providers": {"echo": provider, "echo-auth": dict(provider)},
        "models": models,
        "routes": {"chat": {"targets": ["echo-400"]}},
    }


def _post(gateway, path: str, body: dict):
    return http("POST", gateway.url + path, json.dumps(body).encode())


def test_upstream_key_reaches_no_client_health_page_status_or_log(gateway_factory) -> None:
    messages = [{"role": "user", "content": "hi"}]
    seen: list[str] = []
    with serve_app(secret_echoing_upstream()) as port:
        gateway = gateway_factory(_echo_config(port), env={KEY_ENV: KEY})
        client = sdk_client(gateway)

        # a passed-through 400: key in message, code, param, type and a header
        with pytest.raises(openai.BadRequestError) as failed:
            client.chat.completions.create(model="echo-400", messages=messages)
        error = failed.value
        seen += [str(error), json.dumps(error.body), error.response.text]
        seen.append(json.dumps(dict(error.response.headers)))
        assert error.body["message"].startswith("Bad request for key [redacted]")
        for path, body in (
            ("/v1/chat/completions", {"model": "echo-400", "messages": messages}),
            ("/v1/messages", {"model": "echo-400", "max_tokens": 5, "messages": messages}),
        ):
            raw = _post(gateway, path, body)
            assert raw.status == 400
            seen += [raw.body.decode("utf-8", "replace"), json.dumps(raw.headers)]
        with pytest.raises(anthropic.BadRequestError) as refused:
            anthropic.Anthropic(
                base_url=gateway.url, api_key="unused", max_retries=0
            ).messages.create(model="echo-400", max_tokens=5, messages=messages)
        seen += [str(refused.value), json.dumps(refused.value.body)]

        # an error event inside a 200 stream: before any text (passed through) and after it
        with pytest.raises(openai.BadRequestError) as failed:
            list(
                client.chat.completions.create(
                    model="echo-stream-first", messages=messages, stream=True
                )
            )
        seen += [str(failed.value), failed.value.response.text]
        late = _post(
            gateway,
            "/v1/chat/completions",
            {"model": "echo-stream-late", "messages": messages, "stream": True},
        )
        assert late.status == 200 and b"partial" in late.body and b"error" in late.body
        seen.append(late.body.decode("utf-8", "replace"))

        # a 401 with the provider's masked echo: the provider is misconfigured, and says why
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="echo-401", messages=messages)
        seen += [str(failed.value), failed.value.response.text]

        health = gateway.get("/health/providers")
        assert health.json()["providers"]["echo-auth"]["state"] == "misconfigured"
        seen.append(health.body.decode())
        status = turnout_cli("status", "--url", gateway.url, "--json", timeout=30)
        assert status.returncode == 0, status.stderr
        assert "misconfigured" in status.stdout
        seen.append(status.stdout)
        gateway.stop()
        log = gateway.log()
        assert "echo-auth is misconfigured" in log
        seen.append(log)
    for text in seen:
        assert_no_fragment(text)
