"""The OpenAI Responses API (`POST /v1/responses`) on a real `turnout serve`, driven by the
official openai SDK and the OpenAI Agents SDK: plain, streamed (raw events and the stream
helper), a function tool round trip, structured output, failover, bad input, and an agent
with one tool failing over from a broken primary."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import orjson
import pytest
from aiohttp import web
from pydantic import BaseModel

from tests.conftest import GatewayProcess, ledger_rows, sdk_client, sim_config, start_gateway
from tests.upstreams import (
    SIM_ANTHROPIC_ENV,
    both_dialects,
    fixed_error_upstream,
    serve_app,
    shared_sim,
)

REPLY = "The quick brown fox jumps over the lazy dog."
ASK = "What is the weather like in Lisbon today?"
WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 18},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
FUNCTION_F: Any = {"type": "function", "name": "f"}
IMAGE = "data:image/png;base64,iVBORw0KGgo="
BACKUP = {"reply": "backup answered", "tokens_per_second": 5000}
SERVER_ERROR = {"message": "boom", "type": "server_error", "param": None, "code": None}
BAD_KEY = {
    "message": "Incorrect API key provided.",
    "type": "invalid_request_error",
    "param": None,
    "code": "invalid_api_key",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("responses")


@pytest.fixture(scope="module")
def gateway(data_dir: Path) -> Iterator[GatewayProcess]:
    config = sim_config(
        {"primary": {"reply": REPLY, "tokens_per_second": 5000}},
        {"chat": {"targets": ["primary"]}},
    )
    gateway = start_gateway(config, data_dir)
    yield gateway
    gateway.stop()


def _rows(data_dir: Path) -> list[Any]:
    return ledger_rows("sqlite", str(data_dir / "turnout.db"))


def _row(data_dir: Path, request_id: str) -> Any:
    """The ledger row of one request (rows are written off the hot path: wait for it)."""
    for _ in range(100):
        rows = [row for row in _rows(data_dir) if row.id == request_id]
        if rows:
            return rows[0]
        time.sleep(0.05)
    raise AssertionError(f"no ledger row for {request_id}")


# --- plain, streamed, the stream helper --------------------------------------------------------


def test_create_answers_a_response_object(gateway: GatewayProcess, data_dir: Path) -> None:
    client = sdk_client(gateway)
    raw = client.responses.with_raw_response.create(
        model="chat", input="Tell me about foxes.", instructions="Be brief.", store=True
    )
    response = raw.parse()
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed" and response.error is None
    assert response.output_text == REPLY
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant"
    assert message.status == "completed" and message.id.startswith("msg_")
    (part,) = message.content
    assert part.type == "output_text" and part.annotations == []
    assert response.model == "primary"
    assert response.store is False  # accepted, ignored: turnout keeps nothing
    usage = response.usage
    assert usage is not None and usage.output_tokens > 0 and usage.input_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert raw.headers["x-turnout-route"] == "chat"
    assert raw.headers["x-turnout-model"] == "primary"
    row = _row(data_dir, raw.headers["x-turnout-request-id"])
    assert (row.dialect, row.status, row.outcome, row.model) == ("responses", 200, "ok", "primary")
    assert row.completion_tokens == usage.output_tokens


def test_stream_sends_the_responses_event_sequence(gateway: GatewayProcess, data_dir: Path) -> None:
    client = sdk_client(gateway)
    with client.responses.with_streaming_response.create(
        model="chat", input=[{"role": "user", "content": "foxes?"}], stream=True
    ) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        request_id = raw.headers["x-turnout-request-id"]
        events = list(raw.parse())
    kinds = [event.type for event in events]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 3 and "".join(d.delta for d in deltas) == REPLY
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds) == {
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    }
    created, completed = events[0], events[-1]
    assert created.response.status == "in_progress" and created.response.output == []
    assert completed.response.id == created.response.id
    assert completed.response.status == "completed"
    assert completed.response.output_text == REPLY
    added = events[2]
    assert completed.response.output[0].id == added.item.id
    assert all(d.item_id == added.item.id for d in deltas)
    assert completed.response.usage.output_tokens > 0
    row = _row(data_dir, request_id)
    assert (row.dialect, row.stream, row.outcome) == ("responses", True, "ok")


def test_stream_helper_gives_the_final_response(gateway: GatewayProcess) -> None:
    client = sdk_client(gateway)
    with client.responses.stream(model="chat", input="foxes?") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == REPLY
    assert final.output_text == REPLY
    assert final.status == "completed"


async def test_async_client_streams(gateway: GatewayProcess) -> None:
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key="x", max_retries=0) as oai:
        stream = await oai.responses.create(model="chat", input="foxes?", stream=True)
        kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_max_output_tokens_cut_is_an_incomplete_response(
    gateway: GatewayProcess, stream: bool
) -> None:
    client = sdk_client(gateway)
    if stream:
        events = list(
            client.responses.create(model="chat", input="hi", max_output_tokens=3, stream=True)
        )
        assert events[-1].type == "response.incomplete"  # as OpenAI ends a cut stream
        response = events[-1].response
    else:
        response = client.responses.create(model="chat", input="hi", max_output_tokens=3)
    assert response.status == "incomplete"
    assert [item.status for item in response.output] == ["incomplete"]
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text and response.output_text != REPLY
    assert REPLY.startswith(response.output_text)


# --- tools ------------------------------------------------------------------------------------


def _run_tool(arguments: dict[str, Any]) -> str:
    return f"18C and sunny in {arguments['city']}"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_function_tool_round_trip(gateway: GatewayProcess, stream: bool) -> None:
    """The model calls the tool; the client sends its output back; the model answers text."""
    client = sdk_client(gateway)
    conversation: list[Any] = [{"role": "user", "content": ASK}]
    rounds = 0
    while True:
        rounds += 1
        assert rounds <= 3, "the loop never ended"
        if stream:
            with client.responses.stream(
                model="chat", input=conversation, tools=[WEATHER_TOOL]
            ) as events:
                response = events.get_final_response()
        else:
            response = client.responses.create(
                model="chat", input=conversation, tools=[WEATHER_TOOL], parallel_tool_calls=False
            )
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            break
        (call,) = calls
        assert call.name == "get_weather" and call.status == "completed"
        assert call.id.startswith("fc_") and call.call_id
        # the agent's way: the whole output goes back as input, then the tool's output
        conversation += [item.model_dump(exclude_none=True) for item in response.output]
        output = _run_tool(json.loads(call.arguments))
        conversation.append(
            {"type": "function_call_output", "call_id": call.call_id, "output": output}
        )
    assert rounds == 2
    assert response.status == "completed"
    assert "18C and sunny in sim" in response.output_text


def test_stream_function_call_events(gateway: GatewayProcess) -> None:
    client = sdk_client(gateway)
    events = list(
        client.responses.create(model="chat", input=ASK, tools=[WEATHER_TOOL], stream=True)
    )
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    assert done.arguments == arguments and json.loads(arguments)["city"]
    (item,) = events[-1].response.output
    assert item.type == "function_call" and item.arguments == arguments
    assert item.id == done.item_id


def test_tool_choice_forces_the_named_function(gateway: GatewayProcess) -> None:
    client = sdk_client(gateway)
    conversation: Any = [
        {"role": "user", "content": ASK},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
    ]
    choice: Any = {"type": "function", "name": "get_weather"}
    response = client.responses.create(
        model="chat", input=conversation, tools=[WEATHER_TOOL], tool_choice=choice
    )
    assert [item.type for item in response.output] == ["function_call"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_anthropic_upstream_is_reached_by_translation(
    gateway_factory: Any, stream: bool
) -> None:
    """Responses in, Anthropic Messages upstream (the simulator's), tool round trip."""
    behaviours = {"openai-m": {"reply": "unused"}, "claude-m": {"reply": "from claude"}}
    with shared_sim(behaviours) as sim:
        config = {**both_dialects(sim.base_url), "routes": {"chat": {"targets": ["claude-m"]}}}
        client = sdk_client(gateway_factory(config, env=SIM_ANTHROPIC_ENV))

        def answer(conversation: Any) -> Any:
            if not stream:
                return client.responses.create(
                    model="chat", input=conversation, tools=[WEATHER_TOOL]
                )
            with client.responses.stream(
                model="chat", input=conversation, tools=[WEATHER_TOOL]
            ) as events:
                return events.get_final_response()

        first = answer(ASK)
        (call,) = first.output
        assert call.type == "function_call" and call.name == "get_weather"
        conversation = [
            {"role": "user", "content": ASK},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C"},
        ]
        second = answer(conversation)
    assert second.model == "claude-m" and second.status == "completed"
    assert "18C" in second.output_text


# --- structured output ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_text_format_json_schema(gateway: GatewayProcess, stream: bool) -> None:
    client = sdk_client(gateway)
    text: Any = {"format": {"type": "json_schema", "name": "person", "schema": PERSON}}
    if stream:
        with client.responses.stream(model="chat", input="A person.", text=text) as events:
            response = events.get_final_response()
    else:
        response = client.responses.create(model="chat", input="A person.", text=text)
    jsonschema.validate(json.loads(response.output_text), PERSON)


class Person(BaseModel):
    name: str
    age: int


def test_parse_with_a_pydantic_model(gateway: GatewayProcess) -> None:
    client = sdk_client(gateway)
    parsed = client.responses.parse(model="chat", input="A person.", text_format=Person)
    assert isinstance(parsed.output_parsed, Person)
    with client.responses.stream(model="chat", input="A person.", text_format=Person) as events:
        streamed = events.get_final_response()
    assert isinstance(streamed.output_parsed, Person)


def test_the_json_guard_fails_over_a_broken_json_answer(gateway_factory: Any) -> None:
    models = {"primary": {"malformed_rate": 1.0}, "backup": BACKUP}
    gateway = gateway_factory(sim_config(models, {"chat": {"targets": ["primary", "backup"]}}))
    client = sdk_client(gateway)
    raw = client.responses.with_raw_response.create(
        model="chat", input="A person.", text={"format": {"type": "json_object"}}
    )
    json.loads(raw.parse().output_text)
    assert raw.headers["x-turnout-model"] == "backup"
    assert raw.headers["x-turnout-fallback"].startswith("primary=invalid_output")
    assert raw.headers["x-turnout-guard"] == "valid"


# --- reasoning from the upstream -------------------------------------------------------------------


def _reasoning_upstream() -> web.Application:
    """A chat upstream that reasons (DeepSeek's `reasoning_content`), whole and streamed."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        head = {"id": "chatcmpl-r", "created": 1, "model": "thinker"}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "42", "reasoning_content": "Let me think."}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return web.json_response(
                {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        deltas: list[Any] = [
            {"role": "assistant", "reasoning_content": "Let me "},
            {"reasoning_content": "think."},
            {"content": "4"},
            {"content": "2"},
        ]
        for n, delta in enumerate(deltas):
            finish = "stop" if n == len(deltas) - 1 else None
            chunk = {
                **head,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        last = {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}
        await response.write(b"data: " + orjson.dumps(last) + b"\n\ndata: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


def test_upstream_reasoning_is_a_reasoning_item(gateway_factory: Any) -> None:
    with serve_app(_reasoning_upstream()) as port:
        config = {
            "providers": {"deep": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}},
            "models": {"thinker": {"provider": "deep"}},
            "routes": {"chat": {"targets": ["thinker"]}},
        }
        client = sdk_client(gateway_factory(config))
        whole = client.responses.create(model="chat", input="6 times 7?")
        with client.responses.stream(model="chat", input="6 times 7?") as events:
            kinds = [e.type for e in events]
            streamed = events.get_final_response()
    for response in (whole, streamed):
        reasoning, message = response.output
        assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
        assert reasoning.summary == []
        assert [c.text for c in reasoning.content or []] == ["Let me think."]
        assert message.type == "message" and response.output_text == "42"
        assert response.usage is not None and response.usage.output_tokens == 7
    assert kinds.count("response.reasoning_text.delta") == 2
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")


# --- failover -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [(500, SERVER_ERROR, "server_error(500)"), (401, BAD_KEY, "auth(401)")],
    ids=["500", "401"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_failover_from_a_broken_primary(
    gateway_factory: Any, tmp_path: Path, status: int, error: dict, reason: str, stream: bool
) -> None:
    with serve_app(fixed_error_upstream(status, error)) as port:
        config = sim_config({"backup": BACKUP}, {"chat": {"targets": ["primary", "backup"]}})
        config["providers"]["broken"] = {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{port}/v1",
        }
        config["models"]["primary"] = {"provider": "broken"}
        gateway = gateway_factory(config)
        client = sdk_client(gateway)
        if stream:
            with client.responses.with_streaming_response.create(
                model="chat", input="hello", stream=True
            ) as raw:
                headers = raw.headers
                final = [e for e in raw.parse() if e.type == "response.completed"][-1]
                text = final.response.output_text
        else:
            raw = client.responses.with_raw_response.create(model="chat", input="hello")
            headers, text = raw.headers, raw.parse().output_text
    assert text == "backup answered"
    assert headers["x-turnout-model"] == "backup"
    assert headers["x-turnout-attempts"] == "2"
    assert headers["x-turnout-fallback"] == f"primary={reason}"
    row = _row(tmp_path, headers["x-turnout-request-id"])
    assert (row.dialect, row.model, row.outcome) == ("responses", "backup", "ok")
    assert row.attempts == [{"model": "primary", "reason": reason}]
    health = gateway.get("/health/providers").json()
    assert health["models"]["primary"]["last_error"]["class"] == reason.split("(")[0]


def test_a_stream_broken_after_it_began_ends_with_error_and_failed(gateway_factory: Any) -> None:
    breaking = {"disconnect_rate": 1.0, "disconnect_after": 3, "reply": "one two three four five"}
    gateway = gateway_factory(
        sim_config(
            {"primary": breaking, "backup": BACKUP}, {"chat": {"targets": ["primary", "backup"]}}
        )
    )
    events = list(sdk_client(gateway).responses.create(model="chat", input="hi", stream=True))
    kinds = [e.type for e in events]
    assert "response.output_text.delta" in kinds  # content had begun: no failover possible
    assert kinds[-2:] == ["error", "response.failed"]
    assert "stream failed" in events[-2].message
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "server_error"
    assert failed.output_text  # what was sent is in the failed response


# --- bad input ----------------------------------------------------------------------------------

BAD_BODIES = {
    "not json": (b'{"model": "chat", "input": ', None),
    "not an object": (b"[1, 2]", None),
    "no model": (b'{"input": "hi"}', "model"),
    "input a number": (b'{"model": "chat", "input": 5}', "input"),
    "empty input": (b'{"model": "chat", "input": []}', "input"),
    "bad role": (
        b'{"model": "chat", "input": [{"role": "robot", "content": "x"}]}',
        "input[0].role",
    ),
    "temperature a string": (
        b'{"model": "chat", "input": "hi", "temperature": "hot"}',
        "temperature",
    ),
    "stream a string": (b'{"model": "chat", "input": "hi", "stream": "yes"}', "stream"),
    "max_output_tokens zero": (
        b'{"model": "chat", "input": "hi", "max_output_tokens": 0}',
        "max_output_tokens",
    ),
    "function_call_output without call_id": (
        b'{"model": "chat", "input": [{"type": "function_call_output", "output": "x"}]}',
        "input[0].call_id",
    ),
    "hosted tool call item": (
        b'{"model": "chat", "input": [{"type": "web_search_call", "id": "ws_1"}]}',
        "input[0].type",
    ),
    "bad json schema": (
        (
            b'{"model": "chat", "input": "hi", "text": {"format": {"type": "json_schema",'
            b' "name": "x", "schema": {"type": "nonsense"}}}}'
        ),
        "text.format.schema",
    ),
}


@pytest.mark.parametrize("name", BAD_BODIES)
def test_bad_input_is_a_400_in_openai_shape(gateway: GatewayProcess, name: str) -> None:
    body, param = BAD_BODIES[name]
    result = gateway.post("/v1/responses", body)
    assert result.status == 400, result.body
    error = result.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param


def test_hosted_tools_are_refused_by_name(gateway: GatewayProcess) -> None:
    client = sdk_client(gateway)
    for tool in ({"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}):
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model="chat", input="hi", tools=[tool])  # type: ignore[list-item]
        assert refused.value.param == "tools[0].type"
        assert f"'{tool['type']}' is not supported" in refused.value.message


def test_previous_response_id_is_refused_with_the_reason(gateway: GatewayProcess) -> None:
    client = sdk_client(gateway)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="chat", input="and then?", previous_response_id="resp_1")
    assert refused.value.param == "previous_response_id"
    assert refused.value.code == "unsupported_parameter"
    assert "keeps no conversation state" in refused.value.message
    assert "send the whole conversation" in refused.value.message


def test_responses_only_fields_never_reach_a_chat_upstream(gateway_factory: Any) -> None:
    """include, reasoning, metadata, store... dropped; reasoning input items dropped."""
    seen: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(await request.json())
        message = {"role": "assistant", "content": "fine"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        return web.json_response({"id": "c", "created": 1, "choices": [choice], "usage": usage})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    with serve_app(app) as port:
        config = {
            "providers": {"up": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}},
            "models": {"m": {"provider": "up", "supports": ["tools", "vision"]}},
            "routes": {"chat": {"targets": ["m"]}},
        }
        client = sdk_client(gateway_factory(config))
        response = client.responses.create(
            model="chat",
            instructions="Be kind.",
            input=[
                {"role": "developer", "content": [{"type": "input_text", "text": "Terse."}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "hi"},
                        {"type": "input_image", "image_url": IMAGE, "detail": "low"},
                    ],
                },
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {
                    "type": "message",
                    "id": "msg_1",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
                },
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "done"},
            ],
            tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            include=["reasoning.encrypted_content"],
            reasoning={"effort": "low"},
            metadata={"k": "v"},
            store=True,
            truncation="auto",
            prompt_cache_key="p",
            service_tier="auto",
            max_output_tokens=50,
            parallel_tool_calls=False,
            tool_choice={"type": "allowed_tools", "mode": "auto", "tools": [FUNCTION_F]},
            user="u1",
        )
    assert response.output_text == "fine"
    (body,) = seen
    assert set(body) <= {
        "model",
        "messages",
        "max_tokens",
        "tools",
        "parallel_tool_calls",
        "tool_choice",
        "user",
        "stream",
        "stream_options",
    }, set(body)
    assert body["max_tokens"] == 50 and body["parallel_tool_calls"] is False
    assert body["tool_choice"] == {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "auto",
            "tools": [{"type": "function", "function": {"name": "f"}}],
        },
    }
    assert body["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "developer", "content": "Terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    assert body["tools"] == [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    ]


def test_bad_requests_are_ledgered_and_the_gateway_keeps_serving(
    gateway_factory: Any, tmp_path: Path
) -> None:
    gateway = gateway_factory(
        sim_config({"primary": {"reply": REPLY}}, {"chat": {"targets": ["primary"]}})
    )
    for body, _ in BAD_BODIES.values():
        assert gateway.post("/v1/responses", body).status == 400
    assert sdk_client(gateway).responses.create(model="chat", input="hi").output_text == REPLY
    gateway.stop()
    rows = [row for row in _rows(tmp_path) if row.dialect == "responses"]
    assert len(rows) == len(BAD_BODIES) + 1
    assert sorted(row.status for row in rows) == [200] + [400] * len(BAD_BODIES)


# --- the OpenAI Agents SDK ----------------------------------------------------------------------


async def _run_agent(agents: Any, base_url: str, tool: Any, stream: bool) -> Any:
    """One agent run through the gateway; its result (the final output is read after)."""
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        model = agents.OpenAIResponsesModel(model="agent", openai_client=client)
        agent = agents.Agent(
            name="weather", instructions="Use the tool.", model=model, tools=[tool]
        )
        if not stream:
            return await agents.Runner.run(agent, ASK, max_turns=4)
        result = agents.Runner.run_streamed(agent, ASK, max_turns=4)
        kinds = {event.type async for event in result.stream_events()}
        assert "raw_response_event" in kinds
        return result


@pytest.mark.parametrize("stream", [False, True], ids=["run", "run_streamed"])
def test_an_agent_with_one_tool_fails_over_from_a_broken_primary(
    gateway_factory: Any, tmp_path: Path, stream: bool
) -> None:
    agents = pytest.importorskip("agents", reason="openai-agents is in the test extra")
    agents.set_tracing_disabled(True)  # no internet: nothing to export traces to
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        calls.append(city)
        return f"18C and sunny in {city}"

    with serve_app(fixed_error_upstream(500, SERVER_ERROR)) as port:
        config = sim_config({"backup": BACKUP}, {"agent": {"targets": ["primary", "backup"]}})
        config["providers"]["broken"] = {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{port}/v1",
        }
        config["models"]["primary"] = {"provider": "broken", "supports": ["tools"]}
        gateway = gateway_factory(config)
        result = asyncio.run(_run_agent(agents, gateway.base_url, get_weather, stream))
    assert calls == ["sim"]  # the agent called the tool once, with the model's arguments
    assert "18C and sunny in sim" in result.final_output
    gateway.stop()
    rows = [row for row in _rows(tmp_path) if row.dialect == "responses"]
    assert len(rows) == 2  # the tool call, then the answer
    for row in rows:
        assert (row.model, row.outcome, row.stream) == ("backup", "ok", stream)
        assert row.attempts == [{"model": "primary", "reason": "server_error(500)"}]
