"""A client's schema cannot take healthy models out of service or freeze the gateway: an
answer no model can give counts against no model, and a schema's regular expressions run
with a time limit."""

from __future__ import annotations

import json
import threading
from typing import Any

from tests.conftest import http, sim_config

USER = [{"role": "user", "content": "hi"}]
ROUTE = {"chat": {"targets": ["alpha", "beta"]}}


def _ask(gateway: Any, response_format: dict[str, Any] | None = None) -> Any:
    body: dict[str, Any] = {"model": "chat", "messages": USER}
    if response_format is not None:
        body["response_format"] = response_format
    return http("POST", gateway.base_url + "/chat/completions", json.dumps(body).encode())


def _schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def test_a_schema_no_model_satisfies_opens_no_breaker(gateway_factory) -> None:
    gateway = gateway_factory(sim_config({"alpha": {}, "beta": {}}, ROUTE))
    # a city is required, and an object with a city is refused: no answer can satisfy it
    impossible = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "not": {"required": ["city"]},
    }
    for _ in range(12):  # more than enough failures to open both breakers, were they counted
        result = _ask(gateway, _schema_format(impossible))
        assert result.status == 503, result.body[:300]
        assert "invalid_output" in result.headers["x-turnout-fallback"]
    plain = _ask(gateway)
    assert plain.status == 200, plain.body[:300]
    assert plain.headers["x-turnout-model"] == "alpha"
    assert "x-turnout-fallback" not in plain.headers
    health = gateway.get("/health/providers").json()
    states = {t["model"]: t["state"] for t in health["routes"]["chat"]["targets"]}
    assert states == {"alpha": "healthy", "beta": "healthy"}


def test_an_invalid_answer_counts_when_another_model_answered_validly(gateway_factory) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    # alpha's JSON answers are always broken, beta's valid
    gateway = gateway_factory(sim_config({"alpha": {"malformed_rate": 1.0}, "beta": {}}, ROUTE))
    for _ in range(12):
        result = _ask(gateway, _schema_format(schema))
        assert result.status == 200, result.body[:300]
    health = gateway.get("/health/providers").json()
    alpha = next(t for t in health["routes"]["chat"]["targets"] if t["model"] == "alpha")
    assert alpha["last_error"]["class"] == "invalid_output", alpha


def test_a_backtracking_pattern_does_not_freeze_the_gateway(gateway_factory) -> None:
    gateway = gateway_factory(sim_config({"alpha": {}, "beta": {}}, ROUTE))
    # the simulator answers with the default: 40 a's then '!', on which Python's re would
    # backtrack through 2**40 ways of matching (a|aa)+ before giving up
    evil = {
        "type": "object",
        "properties": {"s": {"type": "string", "pattern": "^(a|aa)+$", "default": "a" * 40 + "!"}},
        "required": ["s"],
    }
    answers: list[Any] = []
    asking = threading.Thread(target=lambda: answers.append(_ask(gateway, _schema_format(evil))))
    asking.start()
    asking.join(30)
    assert answers, "the request never came back: the pattern froze the gateway"
    assert answers[0].status == 503  # no answer matched: each took too long to check
    assert gateway.get("/health").status == 200
