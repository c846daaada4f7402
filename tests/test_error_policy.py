"""The one error hierarchy: the policy table every upstream error class carries (read by the
retry decision and by health alike), and every refusal rendered by the one renderer in both
client dialects' shapes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from turnout.accounting.auth import AuthError
from turnout.config.schema import HealthConfig, RetryConfig
from turnout.dialects.anthropic.ingress import INGRESS as ANTHROPIC
from turnout.dialects.errors import InvalidRequest
from turnout.dialects.openai.ingress import INGRESS as OPENAI
from turnout.execute.failures import should_retry_same_target
from turnout.gateway import Refused
from turnout.health.engine import HealthEngine
from turnout.model import ErrorClass, Outcome, UpstreamError
from turnout.model.errors import POLICY, ErrorPolicy, GatewayError
from turnout.routing.selector import NoCapableTarget
from turnout.server.body import BodyError
from turnout.server.errors import error_response, render_error

# (class, fails over, retried on the same target, counts against health): what the README
# and the behaviour tests say of each (test_failover, test_forbidden, test_routing)
EXPECTED = [
    (ErrorClass.CLIENT_ERROR, False, False, False),  # passed through to the client as is
    (ErrorClass.CONTEXT_LENGTH, True, False, False),  # a larger model may take it
    (ErrorClass.AUTH, True, False, False),  # misconfigured, not a failure
    (ErrorClass.QUOTA, True, False, False),  # a long cooldown
    (ErrorClass.RATE_LIMITED, True, True, False),  # a cooldown, not a failure
    (ErrorClass.OVERLOADED, True, True, True),
    (ErrorClass.SERVER_ERROR, True, True, True),
    (ErrorClass.TIMEOUT, True, True, True),
    (ErrorClass.CONNECTION, True, True, True),
    (ErrorClass.INVALID_OUTPUT, True, True, True),  # within the guard's own retry budget
    (ErrorClass.STREAM_BROKEN, True, True, True),
]


def test_the_table_covers_every_error_class() -> None:
    assert set(POLICY) == set(ErrorClass) == {row[0] for row in EXPECTED}


@pytest.mark.parametrize(("error_class", "fails_over", "retried", "counted"), EXPECTED)
def test_policy_of_each_class(
    error_class: ErrorClass, fails_over: bool, retried: bool, counted: bool
) -> None:
    assert POLICY[error_class] == ErrorPolicy(fails_over, retried, counted)
    assert error_class.fails_over is fails_over


@pytest.mark.parametrize(("error_class", "fails_over", "retried", "counted"), EXPECTED)
def test_the_retry_decision_reads_the_table(
    error_class: ErrorClass, fails_over: bool, retried: bool, counted: bool
) -> None:
    error = UpstreamError(error_class, "failed")
    retry = RetryConfig(attempts=3)
    assert should_retry_same_target(error, 0, retry, guard_retries=1) is retried
    # out of budget, nothing is retried
    assert not should_retry_same_target(error, 2, retry, guard_retries=0)


@pytest.mark.parametrize(("error_class", "fails_over", "retried", "counted"), EXPECTED)
def test_health_counts_what_the_table_says(
    error_class: ErrorClass, fails_over: bool, retried: bool, counted: bool
) -> None:
    engine = HealthEngine(HealthConfig())
    engine.register("alpha", "or")
    outcome = Outcome(
        "chat", "alpha", "or", ok=False, error_class=error_class, status=500, started=1.0
    )
    engine.record(outcome)
    assert engine.snapshot()["models"]["alpha"]["failures"] == (1 if counted else 0)


# --- rendering ----------------------------------------------------------------------------

# (refusal, status, OpenAI's type, Anthropic's type, code, param, headers)
REFUSALS: list[tuple[GatewayError, int, str, str, str | None, str | None, dict[str, str]]] = [
    (
        InvalidRequest("messages: at least one message is required", "messages"),
        400,
        "invalid_request_error",
        "invalid_request_error",
        None,
        "messages",
        {},
    ),
    (
        AuthError(401, "Invalid API key.", "invalid_api_key"),
        401,
        "authentication_error",
        "authentication_error",
        "invalid_api_key",
        None,
        {},
    ),
    (
        AuthError(429, "Too many failed authentications", "too_many", {"retry-after": "7"}),
        429,
        "rate_limit_error",
        "rate_limit_error",
        "too_many",
        None,
        {"retry-after": "7"},
    ),
    (
        BodyError(413, "request body larger than 10 bytes", "request_too_large", close=True),
        413,
        "invalid_request_error",
        "request_too_large",
        "request_too_large",
        None,
        {},
    ),
    (
        NoCapableTarget("The prompt is too long", "context_length_exceeded", "messages"),
        400,
        "invalid_request_error",
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
        {},
    ),
    (
        Refused(
            503,
            "every target failed",
            code="all_targets_unavailable",
            error_type="service_unavailable",
            headers={"retry-after": "2"},
        ),
        503,
        "service_unavailable",
        "overloaded_error",  # Anthropic's own type for a 503
        "all_targets_unavailable",
        None,
        {"retry-after": "2"},
    ),
]


def _body(response: Any) -> Any:
    return orjson.loads(response.body)


@pytest.mark.parametrize(
    ("refusal", "status", "openai_type", "anthropic_type", "code", "param", "headers"),
    REFUSALS,
    ids=lambda value: type(value).__name__ if isinstance(value, GatewayError) else None,
)
def test_each_refusal_renders_in_both_dialects(
    refusal: GatewayError,
    status: int,
    openai_type: str,
    anthropic_type: str,
    code: str | None,
    param: str | None,
    headers: dict[str, str],
) -> None:
    openai = render_error(refusal, OPENAI)
    assert openai.status == status
    assert _body(openai) == {
        "error": {"message": refusal.message, "type": openai_type, "param": param, "code": code}
    }
    anthropic = render_error(refusal, ANTHROPIC)
    assert anthropic.status == status
    assert _body(anthropic) == {
        "type": "error",
        "error": {"type": anthropic_type, "message": refusal.message},
    }
    for response in (openai, anthropic):
        assert response.content_type == "application/json"
        assert {k: response.headers[k] for k in headers} == headers


def test_errors_outside_a_handler_take_the_shape_of_the_path() -> None:
    anthropic = error_response(404, "no such endpoint", path="/v1/messages/batches")
    assert _body(anthropic) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "no such endpoint"},
    }
    openai = error_response(500, "internal gateway error", path="/v1/chat", error_type="api_error")
    assert openai.status == 500
    assert _body(openai)["error"] == {
        "message": "internal gateway error",
        "type": "api_error",
        "param": None,
        "code": None,
    }


@pytest.mark.parametrize(
    ("message", "limit"),
    [
        (
            (
                "max_tokens: 128000 > 64000, which is the maximum allowed number of output tokens"
                " for claude-haiku-4-5-20251001"
            ),
            64000,
        ),
        (
            (
                "max_tokens is too large: 128000. This model supports at most 16384 completion"
                " tokens, whereas you provided 128000."
            ),
            16384,
        ),
        ("`max_tokens` must be less than or equal to `8192`, the maximum value", 8192),
        (
            (
                "This model's maximum context length is 8192 tokens. However, you requested 130000"
                " tokens (2000 in the messages, 128000 in the completion). Please reduce the length."
            ),
            6192,
        ),
        ("Invalid value for 'temperature': must be at most 2", None),
        ("maximum context length is 8192 tokens, you sent 9000 tokens", None),
        (None, None),
    ],
)
def test_the_output_limit_an_upstream_states_is_read(
    message: str | None, limit: int | None
) -> None:
    from turnout.dialects.classify import output_limit_in

    assert output_limit_in(message) == limit
