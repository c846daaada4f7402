"""Hostile and malformed client input: a clear 400 in the client's own dialect, naming the
field, before any upstream is called; a client's JSON schema never makes the gateway fetch
anything; the process keeps serving. Real gateway processes, raw bodies where the SDKs would
refuse to send them."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
import yaml
from aiohttp import web

from tests.conftest import GatewayProcess, HTTPResult, http, sdk_client, start_gateway, turnout_cli
from tests.upstreams import SIM_ANTHROPIC_ENV, SharedSim, both_dialects, serve_app, shared_sim

ENV = SIM_ANTHROPIC_ENV
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
USER = [{"role": "user", "content": "hi"}]


def _config(sim: SharedSim) -> dict[str, Any]:
    """Route `chat` -> an OpenAI-speaking upstream, route `claude` -> an Anthropic-speaking
    one (the simulator speaks both), so the translation path is exercised too."""
    routes = {"chat": {"targets": ["openai-m"]}, "claude": {"targets": ["claude-m"]}}
    return {**both_dialects(sim.base_url), "routes": routes}


@pytest.fixture(scope="module")
def sim() -> Iterator[SharedSim]:
    with shared_sim({"openai-m": {"reply": "fine"}, "claude-m": {"reply": "fine"}}) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(sim: SharedSim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = start_gateway(_config(sim), tmp_path_factory.mktemp("hostile"), ENV)
    yield process
    process.stop()


def _post(gateway: GatewayProcess, path: str, body: Any) -> HTTPResult:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http("POST", gateway.url + path, raw, timeout=20)


def _openai_error(result: HTTPResult, param: str) -> dict[str, Any]:
    assert result.status == 400, result.body[:500]
    body = result.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    return error


def _anthropic_error(result: HTTPResult, field: str) -> dict[str, Any]:
    assert result.status == 400, result.body[:500]
    body = result.json()
    assert body["type"] == "error", body
    assert body["error"]["type"] == "invalid_request_error"
    assert field in body["error"]["message"], body
    return body["error"]


def _upstream_requests(sim: SharedSim) -> int:
    return sim.requests("openai-m") + sim.requests("claude-m")


# --- defect 1: a client's schema never causes I/O ----------------------------------------------


class CountingServer:
    """Counts requests and never answers them: what an internal URL that hangs looks like."""

    def __init__(self) -> None:
        self.hits = 0

    def app(self) -> web.Application:
        async def handler(_: web.Request) -> web.Response:
            self.hits += 1
            await asyncio.sleep(3600)
            return web.Response()

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app


@pytest.fixture(scope="module")
def trap() -> Iterator[tuple[CountingServer, str]]:
    server = CountingServer()
    with serve_app(server.app()) as port:
        yield server, f"http://127.0.0.1:{port}/internal/schema.json"


def _json_format(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def _tool(parameters: Any, name: str = "lookup") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def test_remote_ref_is_a_400_without_any_fetch_and_health_answers(gateway, sim, trap) -> None:
    server, url = trap
    before = _upstream_requests(sim)
    schema = {"type": "object", "properties": {"x": {"$ref": url}}, "required": ["x"]}
    outcome: list[HTTPResult] = []
    body = {"model": "chat", "messages": USER, "response_format": _json_format(schema)}
    client = threading.Thread(target=lambda: outcome.append(_post(gateway, CHAT, body)))
    client.start()
    assert http("GET", gateway.url + "/health", timeout=5).status == 200
    client.join(30)
    error = _openai_error(outcome[0], "response_format.json_schema.schema")
    assert "refer" in error["message"]
    assert server.hits == 0
    assert _upstream_requests(sim) == before  # refused before any money was spent


@pytest.mark.parametrize("route", ["chat", "claude"])
def test_remote_ref_in_tool_parameters_is_a_400(gateway, trap, route) -> None:
    server, url = trap
    tools = [_tool({"type": "object"}, "a"), _tool({"$ref": url}, "b")]
    body = {"model": route, "messages": USER, "tools": tools}
    _openai_error(_post(gateway, CHAT, body), "tools[1].function.parameters")
    assert server.hits == 0


def test_anthropic_client_schemas_are_checked_too(gateway, trap) -> None:
    server, url = trap
    base = {"model": "chat", "max_tokens": 50, "messages": USER}
    tools = [{"name": "t", "input_schema": {"$ref": url}}]
    _anthropic_error(_post(gateway, MESSAGES, {**base, "tools": tools}), "tools.0.input_schema")
    output = {"format": {"type": "json_schema", "schema": {"$ref": url}}}
    result = _post(gateway, MESSAGES, {**base, "output_config": output})
    _anthropic_error(result, "output_config.format.schema")
    beta = {"type": "json_schema", "schema": "not a schema"}
    _anthropic_error(_post(gateway, MESSAGES, {**base, "output_format": beta}), "output_format")
    assert server.hits == 0


def _deep(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


UNUSABLE_SCHEMAS = {
    "string": "an object with a name",
    "list": [{"type": "object"}],
    "bad-metaschema": {"type": "wizard"},
    "unknown-dialect": {"$schema": "http://example.com/my-dialect", "type": "object"},
    "ref-cycle": {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}},
    "ref-cycle-in-property": {
        "type": "object",
        "properties": {"a": {"allOf": [{"$ref": "#/properties/a"}]}},
    },
    "dangling-ref": {"$ref": "#/$defs/missing"},
    "file-ref": {"$ref": "file:///etc/passwd"},
    "deep": _deep(45),
    "huge": {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "description": "x" * 40} for i in range(5000)},
    },
}


@pytest.mark.parametrize("route", ["chat", "claude"])
@pytest.mark.parametrize("schema", UNUSABLE_SCHEMAS.values(), ids=UNUSABLE_SCHEMAS.keys())
def test_unusable_response_schema_is_a_400_before_any_upstream_call(
    gateway, sim, route, schema
) -> None:
    before = _upstream_requests(sim)
    body = {"model": route, "messages": USER, "response_format": _json_format(schema)}
    _openai_error(_post(gateway, CHAT, body), "response_format.json_schema.schema")
    body = {"model": route, "messages": USER, "tools": [_tool(schema)]}
    _openai_error(_post(gateway, CHAT, body), "tools[0].function.parameters")
    assert _upstream_requests(sim) == before
    assert gateway.get("/health").status == 200


@pytest.mark.parametrize("route", ["chat", "claude"])
def test_a_valid_schema_with_local_refs_is_still_honoured(gateway, route) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"$ref": "#/$defs/city"}, "temp": {"type": "number"}},
        "required": ["city", "temp"],
        "additionalProperties": False,
        "$defs": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
    }
    raw = sdk_client(gateway).chat.completions.with_raw_response.create(
        model=route, messages=USER, response_format=_json_format(schema)
    )
    answer = json.loads(raw.parse().choices[0].message.content)
    assert answer["city"] in ("Paris", "Oslo") and isinstance(answer["temp"], float | int)
    assert raw.headers["x-turnout-guard"] == "valid"


def test_json_cut_off_at_the_clients_max_tokens_is_its_400_not_a_model_failure(gateway) -> None:
    body = {"model": "chat", "messages": USER, "max_tokens": 1}
    for _ in range(12):  # enough to open a breaker, were these counted against the model
        result = _post(gateway, CHAT, {**body, "response_format": {"type": "json_object"}})
        assert "max_tokens" in _openai_error(result, "max_tokens")["message"]
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    beta = {"type": "json_schema", "schema": schema}
    result = _post(gateway, MESSAGES, {**body, "output_format": beta})
    _anthropic_error(result, "max_tokens")
    assert _post(gateway, CHAT, {"model": "chat", "messages": USER}).status == 200


def test_route_output_schema_with_a_remote_ref_is_a_config_error(tmp_path, trap) -> None:
    _, url = trap
    config = {
        "providers": {"sim": {"kind": "sim", "sim": {"m": {}}}},
        "models": {"m": {"provider": "sim"}},
        "routes": {"chat": {"targets": ["m"], "output_schema": {"$ref": url}}},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = turnout_cli("serve", "--config", str(path))
    assert result.returncode == 2, result.stderr
    assert "routes.chat" in result.stderr and "output_schema" in result.stderr


# --- defect 5: malformed fields are the client's fault -----------------------------------------

_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def _with_calls(tool_calls: Any) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": tool_calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]


def _with_content(content: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


OPENAI_BAD = {
    "tool_calls-not-list": ({"messages": _with_calls("f()")}, "messages[1].tool_calls"),
    "tool_call-not-object": ({"messages": _with_calls(["f"])}, "messages[1].tool_calls[0]"),
    "tool_call-no-function": (
        {"messages": _with_calls([{"id": "call_1", "type": "function"}])},
        "messages[1].tool_calls[0].function",
    ),
    "tool_call-function-not-object": (
        {"messages": _with_calls([{**_CALL, "function": "f"}])},
        "messages[1].tool_calls[0].function",
    ),
    "tool_call-no-name": (
        {"messages": _with_calls([{**_CALL, "function": {"arguments": "{}"}}])},
        "messages[1].tool_calls[0].function.name",
    ),
    "tool_call-arguments-object": (
        {"messages": _with_calls([{**_CALL, "function": {"name": "f", "arguments": {"a": 1}}}])},
        "messages[1].tool_calls[0].function.arguments",
    ),
    "custom-call-function-string": (
        {"messages": _with_calls([{"id": "call_1", "type": "custom", "function": "f"}])},
        "messages[1].tool_calls[0].function",
    ),
    "tool_call-id-number": (
        {"messages": _with_calls([{**_CALL, "id": 7}])},
        "messages[1].tool_calls[0].id",
    ),
    "tool_call_id-object": (
        {"messages": [*_with_calls([_CALL])[:2], {"role": "tool", "tool_call_id": {}}]},
        "messages[2].tool_call_id",
    ),
    "role-array": ({"messages": [{"role": [], "content": "hi"}]}, "messages[0].role"),
    "tools-not-list": ({"tools": {"type": "function"}}, "tools"),
    "tool-not-object": ({"tools": ["lookup"]}, "tools[0]"),
    "tool-no-function": ({"tools": [{"type": "function"}]}, "tools[0].function"),
    "tool-no-name": ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    "tool-parameters-string": ({"tools": [_tool("object")]}, "tools[0].function.parameters"),
    "tool-parameters-list": ({"tools": [_tool([])]}, "tools[0].function.parameters"),
    "tool_choice-number": ({"tools": [_tool({})], "tool_choice": 3}, "tool_choice"),
    "tool_choice-unknown": ({"tools": [_tool({})], "tool_choice": "sometimes"}, "tool_choice"),
    "tool_choice-function-string": (
        {"tools": [_tool({})], "tool_choice": {"type": "function", "function": "lookup"}},
        "tool_choice.function",
    ),
    "content-number": ({"messages": _with_content(5)}, "messages[0].content"),
    "content-object": ({"messages": _with_content({"text": "hi"})}, "messages[0].content"),
    "part-not-object": ({"messages": _with_content(["hi"])}, "messages[0].content[0]"),
    "part-without-type": (
        {"messages": _with_content([{"text": "hi"}])},
        "messages[0].content[0].type",
    ),
    "text-part-number": (
        {"messages": _with_content([{"type": "text", "text": 5}])},
        "messages[0].content[0].text",
    ),
    "image-part-number": (
        {"messages": _with_content([{"type": "image_url", "image_url": 5}])},
        "messages[0].content[0].image_url",
    ),
    "response_format-no-spec": (
        {"response_format": {"type": "json_schema"}},
        "response_format.json_schema",
    ),
    "response_format-spec-string": (
        {"response_format": {"type": "json_schema", "json_schema": "x"}},
        "response_format.json_schema",
    ),
    "response_format-unknown-type": ({"response_format": {"type": "xml"}}, "response_format.type"),
    "include_usage-string": (
        {"stream": True, "stream_options": {"include_usage": "yes"}},
        "stream_options.include_usage",
    ),
    "user-number": ({"user": 12}, "user"),
    "stream-string": ({"stream": "yes"}, "stream"),
    "stream-one": ({"stream": 1}, "stream"),
    "n-two": ({"n": 2}, "n"),
    "n-string": ({"n": "1"}, "n"),
    "n-float": ({"n": 1.5}, "n"),
}


def _nested_list(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("padding", [0, 40_000], ids=["small", "large"])
@pytest.mark.parametrize(("path", "field"), [(CHAT, "seed"), (MESSAGES, "top_k")])
def test_any_field_nested_too_deep_is_a_400(gateway, path, field, padding) -> None:
    """A small body's brackets are counted first, a large one (a long prompt) is walked."""
    user = [{"role": "user", "content": "x" * padding or "Hi"}]
    body = {**_BASE, "messages": user, field: _nested_list(300)}
    result = _post(gateway, path, body)
    assert result.status == 400, result.body[:300]
    assert "nests deeper" in result.body.decode()
    assert gateway.get("/health").status == 200


@pytest.mark.parametrize("route", ["chat", "claude"])
@pytest.mark.parametrize(("fields", "param"), OPENAI_BAD.values(), ids=OPENAI_BAD.keys())
def test_malformed_openai_fields_are_400s_naming_the_field(
    gateway, sim, route, fields, param
) -> None:
    before = _upstream_requests(sim)
    body = {"model": route, "messages": USER, **fields}
    _openai_error(_post(gateway, CHAT, body), param)
    assert _upstream_requests(sim) == before
    assert gateway.get("/health").status == 200


def test_n_above_one_says_to_send_several_requests(gateway) -> None:
    error = _openai_error(_post(gateway, CHAT, {"model": "chat", "messages": USER, "n": 3}), "n")
    assert "one choice" in error["message"]


@pytest.mark.parametrize("route", ["chat", "claude"])
@pytest.mark.parametrize(
    "fields", [{"n": 1}, {"n": None}, {"stream": None}, {"stream": False}, {"tool_choice": None}]
)
def test_valid_edge_values_still_answer(gateway, route, fields) -> None:
    result = _post(gateway, CHAT, {"model": route, "messages": USER, **fields})
    assert result.status == 200, result.body[:500]
    assert len(result.json()["choices"]) == 1


_BASE = {"model": "chat", "max_tokens": 50}
_TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}
ANTHROPIC_BAD = {
    "messages-string": ({"messages": "hi"}, "messages"),
    "message-number": ({"messages": [5]}, "messages.0"),
    "content-number": ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    "block-without-type": (
        {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
        "messages.0.content.0.type",
    ),
    "tool_use-input-string": (
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{**_TOOL_USE, "input": "{}"}]},
            ]
        },
        "messages.1.content.0.input",
    ),
    "system-number": ({"system": 5}, "system"),
    "system-block-without-text": ({"system": [{"type": "text"}]}, "system.0.text"),
    "tools-object": ({"tools": {"name": "t"}}, "tools"),
    "tool-number": ({"tools": [5]}, "tools.0"),
    "tool-schema-string": ({"tools": [{"name": "t", "input_schema": "x"}]}, "tools.0.input_schema"),
    "tool-schema-list": ({"tools": [{"name": "t", "input_schema": []}]}, "tools.0.input_schema"),
    "tool-schema-deep": (
        {"tools": [{"name": "t", "input_schema": _deep(45)}]},
        "tools.0.input_schema",
    ),
    "tool_choice-string": ({"tool_choice": "auto"}, "tool_choice"),
    "tool_choice-tool-without-name": ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    "metadata-string": ({"metadata": "me"}, "metadata"),
    "metadata-user-number": ({"metadata": {"user_id": 5}}, "metadata.user_id"),
    "output_config-format-string": (
        {"output_config": {"format": "json"}},
        "output_config.format",
    ),
    "stream-string": ({"stream": "yes"}, "stream"),
    "stream-one": ({"stream": 1}, "stream"),
}


@pytest.mark.parametrize("route", ["chat", "claude"])
@pytest.mark.parametrize(("fields", "field"), ANTHROPIC_BAD.values(), ids=ANTHROPIC_BAD.keys())
def test_malformed_anthropic_fields_are_400s_naming_the_field(
    gateway, sim, route, fields, field
) -> None:
    before = _upstream_requests(sim)
    body = {**_BASE, "model": route, "messages": USER, **fields}
    _anthropic_error(_post(gateway, MESSAGES, body), field)
    assert _upstream_requests(sim) == before
    assert gateway.get("/health").status == 200


def test_anthropic_sdk_schema_still_honoured(gateway) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    tools = [
        {
            "name": "get_weather",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"$ref": "#/$defs/city"}},
                "required": ["city"],
                "$defs": {"city": {"type": "string"}},
            },
        }
    ]
    for route in ("chat", "claude"):
        message = client.messages.create(
            model=route, max_tokens=100, messages=USER, tools=tools, tool_choice={"type": "any"}
        )
        call = next(block for block in message.content if block.type == "tool_use")
        assert call.name == "get_weather" and isinstance(call.input["city"], str)


# --- whatever an ingress accepts, every upstream encoder can translate -------------------------

ODD_BUT_VALID_OPENAI = [
    {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": "http://x/a.png"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {**_CALL, "extra_content": "not an object"},
                    {**_CALL, "id": "c2", "extra_content": {"google": "nor this"}},
                    {"id": "c3", "type": "custom", "custom": {"name": "g", "input": "x"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "4"}]},
            {"role": "function", "name": "f", "content": "old style"},
            {
                "role": "user",
                "content": [{"type": "video", "video": 5}, {"type": "refusal", "refusal": "no"}],
            },
        ],
        "tools": [{"function": {"name": "f"}}, {"type": "web_search"}],
        "tool_choice": {
            "type": "allowed_tools",
            "allowed_tools": {"mode": "auto", "tools": [{"type": "function"}]},
        },
        "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
    },
    {
        "messages": [{"role": "developer", "content": [{"type": "text", "text": "be brief"}]}],
        "tools": [_tool({"type": "object"})],
        "tool_choice": {"type": "custom", "custom": {"name": "g"}},
        "response_format": {"type": "text"},
        "n": 1,
        "stream": None,
    },
]


def _upstream_encoders() -> list[Any]:
    from turnout.dialects.anthropic.upstream import AnthropicUpstream
    from turnout.dialects.cloudflare import CloudflareUpstream
    from turnout.dialects.gemini.upstream import UPSTREAM as GEMINI
    from turnout.dialects.openai.upstream import OpenAIUpstream

    return [
        OpenAIUpstream(),
        AnthropicUpstream(),
        AnthropicUpstream(structured_output=False),
        GEMINI,
        CloudflareUpstream("acct"),
    ]


@pytest.mark.parametrize("fields", ODD_BUT_VALID_OPENAI)
def test_every_upstream_encoder_takes_what_the_openai_ingress_accepted(fields) -> None:
    from turnout.dialects.openai.ingress import decode_request
    from turnout.model import UpstreamError
    from turnout.routing.capabilities import prompt_tokens

    request = decode_request(json.dumps({"model": "m", **fields}).encode())
    prompt_tokens(request)
    for upstream in _upstream_encoders():
        try:
            json.dumps(upstream.encode_request(request, "m", stream=False))
        except UpstreamError as exc:  # a classified refusal (Workers AI: text only) is fine
            assert exc.error_class.value == "client_error"


ODD_BUT_VALID_ANTHROPIC = {
    "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "url", "url": "http://x/a.png"}},
                {"type": "document", "source": {"type": "text", "data": "d"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": ""},
                {**_TOOL_USE, "input": {"q": 1}},
                {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "4"}],
                    "is_error": True,
                }
            ],
        },
    ],
    "tools": [
        {"name": "f", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search"},
    ],
    "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
    "output_format": {"type": "json_schema", "schema": {"type": "object"}},
    "metadata": {"user_id": "u1"},
}


def test_every_upstream_encoder_takes_what_the_anthropic_ingress_accepted() -> None:
    from turnout.dialects.anthropic.ingress import decode_request
    from turnout.model import UpstreamError

    request = decode_request(json.dumps({**_BASE, **ODD_BUT_VALID_ANTHROPIC}).encode())
    assert request.json_schema == {"type": "object"}
    for upstream in _upstream_encoders():
        try:
            json.dumps(upstream.encode_request(request, "m", stream=True))
        except UpstreamError as exc:
            assert exc.error_class.value == "client_error"
    body = _upstream_encoders()[1].encode_request(request, "m", stream=False)
    assert body["output_config"]["format"]["schema"] == {"type": "object"}
