"""Alerts (issue 14, item 4): rules in config that notify a webhook sink once when they start
holding and once when they stop. A real gateway process in front of a real upstream whose key
starts being refused (401) and later accepted again, the simulator as the fallback, the openai
SDK as the client, and a local webhook receiver."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import ask
from tests.upstreams import serve_app
from tests.webhooks import Receiver, read_jsonl, until
from turnout.config import ConfigError, parse_config

HOOK_ENV = "TURNOUT_TEST_ALERT_WEBHOOK"
KEY_ENV = "TURNOUT_TEST_ALERT_KEY"


class RevocableKeyUpstream:
    """An OpenAI-style upstream whose operator can revoke and restore our key at run time."""

    def __init__(self) -> None:
        self.rejecting = False
        self.calls = 0
        self._lock = threading.Lock()

    def app(self) -> web.Application:
        async def chat(request: web.Request) -> web.Response:
            body = await request.json()
            with self._lock:
                self.calls += 1
                rejecting = self.rejecting
            if rejecting:
                error = {
                    "message": "Incorrect API key provided.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                    "param": None,
                }
                return web.json_response({"error": error}, status=401)
            return web.json_response(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "gpt-x"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "primary answered"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
                }
            )

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        return app


def _config(upstream_port: int, jsonl: Path) -> dict[str, Any]:
    return {
        "providers": {
            "up": {
                "kind": "openai",
                "base_url": f"http://127.0.0.1:{upstream_port}/v1",
                "api_key": "${" + KEY_ENV + "}",
            },
            "sim": {"kind": "sim", "seed": 1, "sim": {"backup": {"reply": "backup answered"}}},
        },
        "models": {
            "primary": {"provider": "up", "model": "gpt-x"},
            "backup": {"provider": "sim"},
        },
        "routes": {"chat": {"targets": ["primary", "backup"]}},
        # a rejected key is tried again every second (a probe), so the healing shows soon
        "health": {"misconfigured_probe_interval": "1s", "probe_interval": "100ms"},
        "sinks": [
            # only the alerts of the rules that notify it
            {"kind": "webhook", "name": "ops", "url": "${" + HOOK_ENV + "}", "events": []},
            {"kind": "jsonl", "name": "file", "path": str(jsonl)},  # default events: no alerts
        ],
        "alerts": [
            {"when": "misconfigured", "notify": "ops"},
            {
                "when": "fallback_rate",
                "route": "chat",
                "above": 0.5,
                "over": "5m",
                "min_requests": 3,
                "notify": "ops",
            },
        ],
    }


def _alerts(receiver: Receiver, rule: str, state: str) -> list[dict[str, Any]]:
    return [e for e in receiver.events() if e["rule"] == rule and e["state"] == state]


def _settled(gateway: Any, receiver: Receiver) -> bool:
    """Every alert the gateway raised so far has reached the receiver."""
    sink = gateway.get("/health").json()["sinks"]["ops"]
    return sink["queued"] == 0 and sink["delivered"] == len(receiver.bodies)


def test_a_revoked_key_alerts_once_and_its_healing_once(gateway_factory, tmp_path: Path) -> None:
    upstream, receiver = RevocableKeyUpstream(), Receiver()
    jsonl = tmp_path / "events.jsonl"
    with serve_app(upstream.app()) as up_port, serve_app(receiver.app()) as hook_port:
        env = {KEY_ENV: "sk-alert-test-key-0000", HOOK_ENV: f"http://127.0.0.1:{hook_port}/hook"}
        gateway = gateway_factory(_config(up_port, jsonl), env=env)
        for n in range(3):
            assert ask(gateway, f"before {n}")[0] == "primary answered"

        upstream.rejecting = True  # the key is revoked
        revoked_at = time.monotonic()
        for n in range(10):
            assert ask(gateway, f"revoked {n}")[0] == "backup answered"
        alert = until(
            "the misconfigured alert",
            lambda: _alerts(receiver, "misconfigured", "firing"),
            timeout=60,
        )
        assert time.monotonic() - revoked_at < 60
        # the share of fallbacks crossed 50% (after 3 good requests, at the 4th fallback)
        until("the fallback-rate alert", lambda: _alerts(receiver, "fallback_rate", "firing"))
        until("the alerts to settle", lambda: _settled(gateway, receiver))
        # ten requests failed over, yet one alert per rule: not one per request
        assert [(e["rule"], e["state"]) for e in receiver.events()] == [
            ("misconfigured", "firing"),
            ("fallback_rate", "firing"),
        ]
        assert alert[0]["provider"] == "up" and "401" in alert[0]["reason"]
        first = receiver.bodies[0]
        assert first["text"].startswith("turnout ALERT: provider up rejects its key")
        rate = _alerts(receiver, "fallback_rate", "firing")[0]
        assert rate["route"] == "chat" and rate["rate"] > 0.5 and rate["requests"] >= 4

        upstream.rejecting = False  # the key is restored: health's probe finds it
        until("the recovery message", lambda: _alerts(receiver, "misconfigured", "recovered"))
        assert receiver.bodies[2]["text"] == "turnout RECOVERED: provider up accepts its key again"
        # good answers bring the route's fallback share back under the threshold
        for n in range(12):
            assert ask(gateway, f"healed {n}")[0] == "primary answered"
        until("the fallback-rate recovery", lambda: _alerts(receiver, "fallback_rate", "recovered"))
        until("the alerts to settle", lambda: _settled(gateway, receiver))
        assert [(e["rule"], e["state"]) for e in receiver.events()] == [
            ("misconfigured", "firing"),
            ("fallback_rate", "firing"),
            ("misconfigured", "recovered"),
            ("fallback_rate", "recovered"),
        ]
        # a sink that no rule notifies and that did not ask for alerts got none
        assert read_jsonl(jsonl) and all(e["type"] != "alert" for e in read_jsonl(jsonl))


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        ([{"when": "misconfigured", "notify": "nobody"}], "alerts.0.notify: no webhook sink"),
        ([{"when": "misconfigured", "notify": "file"}], "alerts.0.notify: no webhook sink"),
        ([{"when": "fallback_rate", "notify": "ops", "route": "x"}], "alerts.0.route: unknown"),
        ([{"when": "fallback_rate", "notify": "ops", "above": 2}], "alerts.0.above:"),
        ([{"when": "sometimes", "notify": "ops"}], "alerts.0.when:"),
    ],
)
def test_a_bad_alert_rule_is_a_config_error_at_its_key_path(alerts: list, message: str) -> None:
    sinks = [
        {"kind": "webhook", "name": "ops", "url": "${" + HOOK_ENV + "}"},
        {"kind": "jsonl", "name": "file", "path": "events.jsonl"},
    ]
    with pytest.raises(ConfigError, match=message):
        parse_config({"sinks": sinks, "alerts": alerts})
