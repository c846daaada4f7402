"""POST /v1/embeddings (issue 13, item 2): the official openai SDK's `embeddings.create`
through a real gateway process, with the simulator (and small real upstreams) as providers:
the four input shapes, base64 (the SDK's default) and float, `dimensions`; failover with
health and the ledger; admission; refusals in OpenAI's shape; the default config."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from aiohttp import web

from tests.conftest import ledger_rows, sdk_client, sim_config, turnout_cli
from tests.upstreams import serve_app
from turnout.config.load import ConfigError, parse_config
from turnout.sim.embeddings import DEFAULT_DIMENSIONS

EMBED = {"supports": ["embeddings"]}
PRICE = {"input": 0.02, "output": 0.0}  # text-embedding-3-small's, per 1M tokens


def _config(models: dict[str, dict[str, Any]], targets: list[str], **extra: Any) -> dict:
    """Embeddings models on the sim, route `embeddings` over `targets`, and a chat route."""
    config = sim_config(
        {"chatty": {}, **models},
        # several models fail over here: vectors of different spaces, which the tests accept
        {
            "embeddings": {"targets": targets, "mixed_vectors": len(targets) > 1},
            "chat": {"targets": ["chatty"]},
        },
        prices={name: PRICE for name in models},
    )
    config.update(extra)
    return config


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def _post(gateway: Any, body: Any) -> tuple[int, dict]:
    result = gateway.post("/v1/embeddings", json.dumps(body).encode())
    return result.status, result.json()


# --- the SDK, through the gateway, to the simulator --------------------------------------------


def test_sdk_single_batch_base64_float_and_dimensions(gateway_factory) -> None:
    gateway = gateway_factory(_config({"embed-a": EMBED}, ["embed-a"]))
    client = sdk_client(gateway)

    raw = client.embeddings.with_raw_response.create(model="embeddings", input="hello world")
    single = raw.parse()  # the SDK asked for base64 and decoded it (little-endian float32)
    assert json.loads(raw.http_request.content)["encoding_format"] == "base64"
    assert single.object == "list" and single.model == "embed-a"
    [item] = single.data
    assert (item.object, item.index, len(item.embedding)) == ("embedding", 0, DEFAULT_DIMENSIONS)
    assert abs(_norm(item.embedding) - 1.0) < 1e-5  # the sim's vectors are unit vectors
    assert single.usage.prompt_tokens == single.usage.total_tokens > 0
    assert raw.headers["x-turnout-route"] == "embeddings"
    assert raw.headers["x-turnout-model"] == "embed-a"
    assert raw.headers["x-turnout-attempts"] == "1"
    assert raw.headers["x-turnout-request-id"]
    expected_cost = single.usage.prompt_tokens * PRICE["input"] / 1e6
    assert float(raw.headers["x-turnout-cost-usd"]) == pytest.approx(expected_cost, abs=1e-8)

    # float: the same vector, unrounded; a batch: one vector per input, in order
    floats = client.embeddings.create(
        model="embeddings", input="hello world", encoding_format="float"
    )
    assert floats.data[0].embedding == pytest.approx(item.embedding, abs=1e-6)
    batch = client.embeddings.create(model="embeddings", input=["one", "hello world", "three"])
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert batch.data[1].embedding == pytest.approx(item.embedding, abs=1e-6)
    assert batch.data[0].embedding != batch.data[2].embedding

    # dimensions goes to the upstream, which shortens the vectors
    short = client.embeddings.create(model="embeddings", input=["a", "b"], dimensions=32)
    assert [len(d.embedding) for d in short.data] == [32, 32]

    # token ids, one list or several: counted as they are
    tokens = client.embeddings.create(model="embeddings", input=[[1, 2, 3], [4, 5]])
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 5
    one = client.embeddings.create(model="embeddings", input=[7, 8, 9, 10])
    assert len(one.data) == 1 and one.usage.prompt_tokens == 4

    # a model name works as a route of one, as for chat
    direct = client.embeddings.create(model="embed-a", input="hello world")
    assert direct.data[0].embedding == pytest.approx(item.embedding, abs=1e-6)


# --- failover, health, ledger -------------------------------------------------------------------


def _failing_upstream(status: int) -> tuple[web.Application, list[dict]]:
    """An OpenAI-compatible host whose /v1/embeddings always fails with `status`."""
    seen: list[dict] = []

    async def embeddings(request: web.Request) -> web.Response:
        seen.append(await request.json())
        error = {"message": "upstream broke", "type": "server_error", "param": None, "code": None}
        return web.json_response({"error": error}, status=status)

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    return app, seen


def test_failover_from_a_broken_primary_with_health_and_ledger(gateway_factory, tmp_path) -> None:
    app, seen = _failing_upstream(500)
    with serve_app(app) as port:
        config = _config(
            {"backup": EMBED},
            ["primary", "backup"],
            health={"breaker": {"consecutive_failures": 2, "open_for": "1h"}},
        )
        config["providers"]["broken"] = {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{port}/v1",
        }
        config["models"]["primary"] = {
            "provider": "broken",
            "model": "text-embedding-3-small",
            "supports": ["embeddings"],
        }
        gateway = gateway_factory(config)
        client = sdk_client(gateway)
        reasons = []
        for text in ("first", "second", "third"):
            raw = client.embeddings.with_raw_response.create(
                model="embeddings", input=text, dimensions=16
            )
            assert len(raw.parse().data[0].embedding) == 16
            assert raw.headers["x-turnout-model"] == "backup"
            reasons.append(raw.headers["x-turnout-fallback"])
        # the primary was asked, in the upstream's own shape, until its breaker opened
        assert seen[0] == {
            "model": "text-embedding-3-small",
            "input": ["first"],
            "encoding_format": "float",
            "dimensions": 16,
        }
        assert reasons[:2] == ["primary=server_error(500)"] * 2
        assert reasons[2].startswith("primary=open(")  # health learned from the attempts
        assert len(seen) == 2
        health = gateway.get("/health/providers").json()["routes"]["embeddings"]
        primary = next(t for t in health["targets"] if t["model"] == "primary")
        assert primary["breaker"] == "open" and primary["failures"] == 2
        assert health["active"] == "backup"
        gateway.stop()  # the ledger is drained on exit
    rows = ledger_rows("sqlite", str(tmp_path / "turnout.db"))
    assert len(rows) == 3
    for row in rows:
        assert (row.dialect, row.route, row.model, row.status) == (
            "embeddings",
            "embeddings",
            "backup",
            200,
        )
        assert row.prompt_tokens > 0 and row.completion_tokens == 0
        assert row.cost_usd == pytest.approx(row.prompt_tokens * PRICE["input"] / 1e6)
        assert row.attempts[0]["model"] == "primary"
    assert rows[0].attempts == [{"model": "primary", "reason": "server_error(500)"}]


SIM_FAULTS = {
    "500": ({"error_rate": {500: 1.0}}, "primary=server_error(500)"),
    "429": ({"rate_limit_rate": 1.0, "retry_after": 20}, "primary=rate_limited(429)"),
    "outage": (
        {"outages": [{"start": 0, "end": "1h", "status": 503}]},
        "primary=server_error(503)",
    ),
    "hang": ({"hang_rate": 1.0}, "primary=timeout(total)"),
    "disconnect": ({"disconnect_rate": 1.0}, "primary=connection"),
}


@pytest.mark.parametrize("fault", sorted(SIM_FAULTS))
def test_the_sims_failures_fail_over_as_for_chat(gateway_factory, fault) -> None:
    behaviour, reason = SIM_FAULTS[fault]
    config = _config({"primary": {**EMBED, **behaviour}, "backup": EMBED}, ["primary", "backup"])
    config["routes"]["embeddings"]["timeout"] = {"total": "500ms"}
    gateway = gateway_factory(config)
    raw = sdk_client(gateway).embeddings.with_raw_response.create(model="embeddings", input="x")
    assert raw.parse().model == "backup"
    assert raw.headers["x-turnout-fallback"] == reason


def test_an_upstream_that_answers_without_usage_is_counted_by_the_gateway(
    gateway_factory, tmp_path
) -> None:
    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        data = [{"index": i, "embedding": [0.6, 0.8]} for i in range(len(body["input"]))]
        return web.json_response({"object": "list", "data": data})  # no usage (some hosts)

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    with serve_app(app) as port:
        gateway = gateway_factory(
            {
                "providers": {
                    "host": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}
                },
                "models": {"e": {"provider": "host", "supports": ["embeddings"], "price": PRICE}},
                "routes": {"embeddings": {"targets": ["e"]}},
            }
        )
        answer = sdk_client(gateway).embeddings.create(
            model="embeddings", input=["hello there", "general kenobi"]
        )
        assert [d.embedding for d in answer.data] == [pytest.approx([0.6, 0.8])] * 2
        assert answer.usage.prompt_tokens == 5  # counted with cl100k_base: 2 + 3
        gateway.stop()
    [row] = ledger_rows("sqlite", str(tmp_path / "turnout.db"))
    assert row.usage_estimated is True and row.prompt_tokens == 5


def test_an_upstream_answer_missing_a_vector_fails_over(gateway_factory) -> None:
    async def embeddings(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"index": 0, "embedding": [1.0]}]})

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    with serve_app(app) as port:
        config = _config({"backup": EMBED}, ["short", "backup"])
        config["providers"]["host"] = {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}
        config["models"]["short"] = {"provider": "host", "supports": ["embeddings"]}
        gateway = gateway_factory(config)
        raw = sdk_client(gateway).embeddings.with_raw_response.create(
            model="embeddings", input=["a", "b"]
        )
        assert len(raw.parse().data) == 2
        assert raw.headers["x-turnout-fallback"] == "short=invalid_output(200)"


def test_every_target_down_is_a_503_with_retry_after(gateway_factory) -> None:
    gateway = gateway_factory(_config({"down": {**EMBED, "error_rate": {503: 1.0}}}, ["down"]))
    with pytest.raises(openai.InternalServerError) as error:
        sdk_client(gateway).embeddings.create(model="embeddings", input="x")
    assert error.value.status_code == 503
    assert error.value.code == "all_targets_unavailable"
    assert error.value.response.headers["retry-after"]
    assert error.value.response.headers["x-turnout-fallback"] == "down=server_error(503)"


def test_upstream_answers_of_the_wrong_shape_are_invalid_output() -> None:
    """The pure upstream decoder: what another model may do better is invalid_output."""
    from turnout.dialects.openai import embeddings as dialect
    from turnout.model import ErrorClass, UpstreamError

    good = dialect.decode_response(
        b'{"data":[{"index":1,"embedding":[0.5]},{"index":0,"embedding":"AACAPw=="}],'
        b'"usage":{"prompt_tokens":3,"total_tokens":3}}',
        2,
    )
    assert good.vectors == [[1.0], [0.5]]  # in input order; base64 float32 read too
    assert good.usage is not None and good.usage.prompt_tokens == 3
    for body in (
        b"not json",
        b'{"data":[]}',
        b'{"data":[{"index":0,"embedding":[0.1]},{"index":0,"embedding":[0.2]}]}',
        b'{"data":[{"index":5,"embedding":[0.1]}]}',
        b'{"data":[{"index":0,"embedding":["a"]}]}',
        b'{"data":[{"index":0,"embedding":"not base64!"}]}',
        b'{"error":{"message":"nope"}}',
    ):
        with pytest.raises(UpstreamError) as error:
            dialect.decode_response(body, 1)
        assert error.value.error_class is ErrorClass.INVALID_OUTPUT, body


# --- admission --------------------------------------------------------------------------------


def test_keys_route_rights_and_rate_limits_apply(gateway_factory, tmp_path: Path) -> None:
    config = _config({"embed-a": EMBED}, ["embed-a"], auth={"required": True})
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"TURNOUT_DATA_DIR": str(tmp_path)}

    def create(*args: str) -> str:
        result = turnout_cli("keys", "create", *args, "--config", str(path), env=env)
        assert result.returncode == 0, result.stderr
        fields = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
        return fields["key"].strip()

    chat_only = create("chat-only", "--routes", "chat")
    limited = create("limited", "--rpm", "1")
    gateway = gateway_factory(config)

    def client(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20)

    with pytest.raises(openai.AuthenticationError):
        client("not-a-key").embeddings.create(model="embeddings", input="x")
    with pytest.raises(openai.PermissionDeniedError):
        client(chat_only).embeddings.create(model="embeddings", input="x")
    assert client(limited).embeddings.create(model="embeddings", input="x").data
    with pytest.raises(openai.RateLimitError) as error:
        client(limited).embeddings.create(model="embeddings", input="x")
    assert error.value.code == "key_rate_limited"


# --- refusals, in OpenAI's shape -----------------------------------------------------------------


BAD_BODIES = {
    "empty string": ({"input": ""}, "input"),
    "empty list": ({"input": []}, "input"),
    "empty string in a list": ({"input": ["a", ""]}, "input"),
    "a number": ({"input": 5}, "input"),
    "an object": ({"input": {"text": "a"}}, "input"),
    "strings and tokens mixed": ({"input": ["a", [1, 2]]}, "input"),
    "a negative token": ({"input": [1, -2]}, "input"),
    "too many items": ({"input": ["x"] * 2049}, "input"),
    "no input": ({}, "input"),
    "bad encoding_format": ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
    "zero dimensions": ({"input": "a", "dimensions": 0}, "dimensions"),
    "dimensions as text": ({"input": "a", "dimensions": "64"}, "dimensions"),
    "user not text": ({"input": "a", "user": 7}, "user"),
}


@pytest.fixture
def embeddings_gateway(gateway_factory):
    return gateway_factory(_config({"embed-a": EMBED}, ["embed-a"]))


def test_bad_requests_are_400s_in_openai_shape(embeddings_gateway) -> None:
    for name, (body, param) in BAD_BODIES.items():
        status, answer = _post(embeddings_gateway, {"model": "embeddings", **body})
        assert status == 400, name
        error = answer["error"]
        assert error["type"] == "invalid_request_error", name
        assert error["param"] == param, name
        assert error["message"], name
    for raw in (b"not json", b"[1, 2]"):
        result = embeddings_gateway.post("/v1/embeddings", raw)
        assert result.status == 400 and result.json()["error"]["type"] == "invalid_request_error"
    status, answer = _post(embeddings_gateway, {"input": "a"})
    assert (status, answer["error"]["param"]) == (400, "model")
    # and the SDK raises its own error for them
    with pytest.raises(openai.BadRequestError):
        sdk_client(embeddings_gateway).embeddings.create(model="embeddings", input="")


def test_wrong_routes_are_404s_that_say_what_to_do(embeddings_gateway) -> None:
    client = sdk_client(embeddings_gateway)
    with pytest.raises(openai.NotFoundError) as error:
        client.embeddings.create(model="chat", input="x")  # a chat route
    assert error.value.code == "model_not_embeddings"
    assert "embeddings routes: embeddings" in error.value.message
    with pytest.raises(openai.NotFoundError) as error:
        client.embeddings.create(model="nowhere", input="x")
    assert error.value.code == "model_not_found"
    assert "supports: [embeddings]" in error.value.message
    # the other way: chat sent to an embeddings route never reaches the upstream
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(
            model="embeddings", messages=[{"role": "user", "content": "hi"}]
        )
    assert error.value.code == "model_not_chat"
    assert "POST /v1/embeddings" in error.value.message
    health = embeddings_gateway.get("/health/providers").json()["routes"]
    assert health["embeddings"]["targets"][0]["requests"] == 0  # nothing was sent upstream
    assert health["chat"]["targets"][0]["requests"] == 0


# --- config ---------------------------------------------------------------------------------------


def test_config_refuses_embeddings_on_kinds_without_them_and_mixed_routes() -> None:
    import turnout.providers  # noqa: F401 - registers the provider kinds

    anthropic = {
        "providers": {"a": {"kind": "anthropic", "api_key": "${ANTHROPIC_API_KEY}"}},
        "models": {"e": {"provider": "a", "supports": ["embeddings"]}},
    }
    with pytest.raises(ConfigError, match=r"models\.e\.supports: .*kind 'anthropic'.* no embed"):
        parse_config(anthropic)
    spaces = sim_config({"e": EMBED, "f": EMBED}, {"vectors": {"targets": ["e", "f"]}})
    with pytest.raises(ConfigError, match=r"routes\.vectors\.targets: embeddings models e, f make"):
        parse_config(spaces)  # two models' vectors in one route: only when the route says so
    spaces["routes"]["vectors"]["mixed_vectors"] = True
    assert parse_config(spaces).routes["vectors"].mixed_vectors
    spaces["routes"]["chat"] = {
        "targets": ["e"],
        "cache": {"mode": "semantic", "embed_route": "vectors"},
    }
    with pytest.raises(ConfigError, match=r"embed_route: 'vectors' fails over between embeddings"):
        parse_config(spaces)  # a semantic cache compares vectors: one space only
    mixed = sim_config({"e": EMBED, "c": {}}, {"both": {"targets": ["e", "c"]}})
    with pytest.raises(ConfigError, match=r"routes\.both\.targets: embeddings models \(e\)"):
        parse_config(mixed)


def test_default_config_without_a_key_answers_404_naming_the_missing_route(
    gateway_factory,
) -> None:
    keys = ("OPENROUTER_API_KEY", "CEREBRAS_API_KEY", "GROQ_API_KEY", "GEMINI_API_KEY")
    env = {k: "" for k in (*keys, "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CLOUDFLARE_API_TOKEN")}
    gateway = gateway_factory(None, env=env)
    status, answer = _post(gateway, {"model": "text-embedding-3-small", "input": "hello"})
    assert status == 404
    error = answer["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "embeddings routes: none" in error["message"]
    assert "supports: [embeddings]" in error["message"]


def test_default_config_with_an_openai_key_has_an_embeddings_route(monkeypatch) -> None:
    import turnout.providers  # noqa: F401 - registers the provider kinds
    from turnout.config.defaults import default_config

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    config = default_config()
    assert config.routes["embeddings"].targets == ["text-embedding-3-small"]
    assert config.models["text-embedding-3-small"].supports == ["embeddings"]
    assert "text-embedding-3-small" not in config.routes["chat"].targets
    monkeypatch.setenv("OPENAI_API_KEY", "")
    assert "embeddings" not in default_config().routes


# --- health probes ---------------------------------------------------------------------------------


def test_an_idle_open_breaker_is_probed_with_an_embedding(gateway_factory) -> None:
    """A half-open embeddings model is probed with an embeddings request: a chat probe would
    fail on it (this host, like OpenAI's, serves no chat for it) and keep the breaker open."""
    calls: list[str] = []

    async def embeddings(request: web.Request) -> web.Response:
        calls.append((await request.json())["input"][0])
        if len(calls) == 1:
            return web.json_response({"error": {"message": "down", "type": "x"}}, status=503)
        return web.json_response({"object": "list", "data": [{"index": 0, "embedding": [1.0]}]})

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)  # and nothing else: chat is a 404
    with serve_app(app) as port:
        gateway = gateway_factory(
            {
                "providers": {
                    "host": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}
                },
                "models": {"e": {"provider": "host", "supports": ["embeddings"]}},
                "routes": {"embeddings": {"targets": ["e"]}},
                "health": {
                    "breaker": {"consecutive_failures": 1, "open_for": "300ms"},
                    "probe_interval": "100ms",
                },
            }
        )
        with pytest.raises(openai.InternalServerError):
            sdk_client(gateway).embeddings.create(model="embeddings", input="client")

        def breaker() -> str:
            routes = gateway.get("/health/providers").json()["routes"]
            return routes["embeddings"]["targets"][0]["breaker"]

        deadline = time.monotonic() + 15
        while breaker() != "closed" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert breaker() == "closed"  # closed by the probe alone: no client request since
        assert calls[:2] == ["client", "ping"]
