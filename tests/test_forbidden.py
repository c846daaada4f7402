"""A 403 never takes a whole provider out. One refusing the request's content (moderation,
a policy guardrail) is the client's: passed through in its own shape, counted nowhere. One
refusing this key access to this model takes that model out only. A 401 is the key's, so
provider-wide. Documented and recorded error bodies first, then real gateway processes."""

from __future__ import annotations

import anthropic
import openai
import orjson
import pytest

from tests.conftest import sdk_client
from tests.upstreams import MODERATION_TRIGGER, forbidding_upstream, serve_app
from turnout.config.schema import HealthConfig
from turnout.dialects.anthropic.upstream import decode_error as anthropic_error
from turnout.dialects.cloudflare import decode_error as cloudflare_error
from turnout.dialects.gemini.errors import decode_error as gemini_error
from turnout.dialects.openai.upstream import decode_error as openai_error
from turnout.health.engine import HealthEngine, model_scoped
from turnout.model import ErrorClass, Outcome


def _body(value: object) -> bytes:
    return orjson.dumps(value)


# (name, decoder, status, body, class): bodies as the providers document them
DOCUMENTED_403S = [
    (
        # https://openrouter.ai/docs/api/reference/errors-and-debugging: 403 "your chosen
        # model requires moderation and your input was flagged"; ModerationErrorMetadata
        "openrouter-moderation",
        openai_error,
        403,
        _body(
            {
                "error": {
                    "code": 403,
                    "message": "meta-llama/llama-4-scout requires moderation on Venice. Your"
                    ' input was flagged for "violence/graphic". No credits were charged.',
                    "metadata": {
                        "reasons": ["violence/graphic"],
                        "flagged_input": "...",
                        "provider_name": "Venice",
                        "model_slug": "meta-llama/llama-4-scout",
                    },
                }
            }
        ),
        ErrorClass.CLIENT_ERROR,
    ),
    (
        "openrouter-guardrail",
        openai_error,
        403,
        _body({"error": {"code": 403, "message": "Request blocked: prompt injection patterns"}}),
        ErrorClass.CLIENT_ERROR,
    ),
    (
        # OpenAI: a project without access to a model answers 403 model_not_found
        "openai-model-access",
        openai_error,
        403,
        _body(
            {
                "error": {
                    "message": "Project `proj_JMo3` does not have access to model `gpt-4.1`",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "model_not_found",
                }
            }
        ),
        ErrorClass.AUTH,
    ),
    (
        "openai-invalid-key-401",
        openai_error,
        401,
        _body({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}),
        ErrorClass.AUTH,
    ),
    (
        "unexplained-403",
        openai_error,
        403,
        b'{"error": {"message": "Forbidden"}}',
        ErrorClass.AUTH,
    ),
    (
        # Anthropic: 403 permission_error, "Your API key does not have permission to use
        # the specified resource"
        "anthropic-permission",
        anthropic_error,
        403,
        _body(
            {
                "type": "error",
                "error": {
                    "type": "permission_error",
                    "message": "Your API key does not have permission to use the specified"
                    " resource.",
                },
            }
        ),
        ErrorClass.AUTH,
    ),
    (
        # OpenRouter's /messages returns its guardrail blocks as an Anthropic permission_error
        "anthropic-shaped-policy-block",
        anthropic_error,
        403,
        _body(
            {
                "type": "error",
                "error": {
                    "type": "permission_error",
                    "message": "Request blocked: input violates the content policy",
                },
            }
        ),
        ErrorClass.CLIENT_ERROR,
    ),
    (
        # Gemini: 403 PERMISSION_DENIED "The caller does not have permission" (a model the
        # key may not use: other models of the same key keep working)
        "gemini-permission-denied",
        gemini_error,
        403,
        _body(
            {
                "error": {
                    "code": 403,
                    "message": "The caller does not have permission",
                    "status": "PERMISSION_DENIED",
                }
            }
        ),
        ErrorClass.AUTH,
    ),
    (
        "cloudflare-model-terms",
        cloudflare_error,
        403,
        _body({"success": False, "errors": [{"code": 5016, "message": "Terms not agreed"}]}),
        ErrorClass.AUTH,
    ),
    (
        "cloudflare-flagged",
        cloudflare_error,
        403,
        _body(
            {"success": False, "errors": [{"code": 9999, "message": "Input flagged by moderation"}]}
        ),
        ErrorClass.CLIENT_ERROR,
    ),
]


@pytest.mark.parametrize(
    ("decode", "status", "body", "error_class"),
    [case[1:] for case in DOCUMENTED_403S],
    ids=[case[0] for case in DOCUMENTED_403S],
)
def test_documented_403s_are_classified(decode, status, body, error_class) -> None:
    error = decode(status, body, {})
    assert (error.error_class, error.status) == (error_class, status)


def test_a_403_is_the_models_a_401_the_providers() -> None:
    assert model_scoped(403) and model_scoped(404)
    assert not model_scoped(401) and not model_scoped(400)  # 400: Gemini's API_KEY_INVALID


def _engine() -> HealthEngine:
    engine = HealthEngine(HealthConfig())
    for model in ("alpha", "beta"):
        engine.register(model, "or")
    return engine


def _failed(model: str, error_class: ErrorClass, status: int) -> Outcome:
    return Outcome(
        "chat",
        model,
        "or",
        ok=False,
        error_class=error_class,
        status=status,
        message="refused",
        started=1.0,
    )


def test_engine_scopes_auth_failures_and_ignores_client_errors() -> None:
    engine = _engine()
    engine.record(_failed("alpha", ErrorClass.CLIENT_ERROR, 403))
    assert engine.misconfigured == {}
    assert engine.snapshot()["models"]["alpha"]["last_error"] is None
    engine.record(_failed("alpha", ErrorClass.AUTH, 403))
    assert set(engine.misconfigured) == {"model:alpha"}
    assert engine.skip_reason("beta", 2.0) is None
    engine.record(_failed("beta", ErrorClass.AUTH, 401))
    assert "provider:or" in engine.misconfigured


# --- a real gateway: two models on one provider --------------------------------------------


def _config(port: int, targets: list[str]) -> dict:
    return {
        "providers": {"or": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}},
        "models": {name: {"provider": "or"} for name in ("alpha", "beta", "denied")},
        "routes": {"chat": {"targets": targets}},
    }


def _ask(gateway, model: str, content: str = "hello"):
    raw = sdk_client(gateway).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}]
    )
    return raw.parse().choices[0].message.content, raw.headers


def test_moderation_403_reaches_the_client_and_takes_nothing_out(gateway_factory) -> None:
    with serve_app(forbidding_upstream()) as port:
        gateway = gateway_factory(_config(port, ["alpha", "beta"]))
        flagged = [{"role": "user", "content": f"{MODERATION_TRIGGER} something nasty"}]
        with pytest.raises(openai.PermissionDeniedError) as refused:
            sdk_client(gateway).chat.completions.create(model="chat", messages=flagged)
        error = refused.value
        assert error.status_code == 403
        assert "flagged" in error.body["message"]
        assert set(error.body) >= {"message", "type", "param", "code"}  # OpenAI's shape
        assert error.response.headers["x-turnout-attempts"] == "1"  # not failed over
        client = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
        with pytest.raises(anthropic.PermissionDeniedError) as refused_anthropic:
            client.messages.create(model="chat", max_tokens=16, messages=flagged)
        assert refused_anthropic.value.body["type"] == "error"
        assert refused_anthropic.value.body["error"]["type"] == "permission_error"

        # the same model, its sibling and the route all answer at once
        assert _ask(gateway, "beta")[0] == "beta answered"
        assert _ask(gateway, "alpha")[0] == "alpha answered"
        text, headers = _ask(gateway, "chat")
        assert text == "alpha answered" and "x-turnout-fallback" not in headers
        health = gateway.get("/health/providers").json()
    assert health["providers"] == {}
    assert {t["state"] for t in health["routes"]["chat"]["targets"]} == {"healthy"}


def test_model_access_403_takes_that_model_out_and_fails_over_to_its_sibling(
    gateway_factory,
) -> None:
    with serve_app(forbidding_upstream()) as port:
        gateway = gateway_factory(_config(port, ["denied", "beta"]))
        text, headers = _ask(gateway, "chat")
        assert text == "beta answered"
        assert headers["x-turnout-fallback"] == "denied=auth(403)"
        text, headers = _ask(gateway, "chat")  # the denied model is skipped, not tried
        assert (text, headers["x-turnout-attempts"]) == ("beta answered", "1")
        health = gateway.get("/health/providers").json()
    assert health["providers"] == {}  # the provider, and its key, are fine
    states = {t["model"]: t["state"] for t in health["routes"]["chat"]["targets"]}
    assert states == {"denied": "misconfigured", "beta": "healthy"}
