"""The simulator as a model in an agent loop, driven by the official OpenAI and Anthropic SDKs
against a real `turnout sim` process: after tool results it answers in text (so loops end),
JSON mode honours the requested schema or the keys a prompt asks for, and `turnout sim
--help` documents its config file."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import openai
import pytest
import yaml

from tests.conftest import turnout_cli
from turnout.cli.sim import CONFIG_HELP
from turnout.sim import load_sim_file
from turnout.sim.schema import SimBehaviour, SimOutage

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
OPENAI_TOOLS = [{"type": "function", "function": WEATHER}]
ANTHROPIC_TOOLS = [
    {"name": "get_weather", "description": "weather", "input_schema": WEATHER["parameters"]}
]
ASK = "What is the weather like in Lisbon today?"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `turnout sim --config FILE` child process; its base URL (no /v1)."""
    path = tmp_path_factory.mktemp("sim") / "sim.yaml"
    config = {"seed": 3, "models": {"agent": {"reply": "Plain reply.", "tokens_per_second": 1e5}}}
    path.write_text(yaml.safe_dump(config))
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "turnout.cli.main",
        "sim",
        "-c",
        str(path),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=1) as response:
                    assert response.status == 200
                break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "turnout sim did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def oai(sim_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=sim_url + "/v1", api_key="x", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(sim_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=sim_url, api_key="x", max_retries=0) as client:
        yield client


def _run_tool(arguments: dict[str, Any]) -> str:
    return f"18C and sunny in {arguments['city']}"


# --- agent loops ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_openai_function_calling_loop_ends_after_the_tool_result(
    oai: openai.OpenAI, stream: bool
) -> None:
    """The SDK's round trip: call, run the tool, send its result, get a text answer."""
    messages: list[Any] = [{"role": "user", "content": ASK}]
    rounds = 0
    while True:
        rounds += 1
        assert rounds <= 3, "the loop never ended: the sim keeps calling tools"
        if stream:
            with oai.chat.completions.stream(
                model="agent", messages=messages, tools=OPENAI_TOOLS
            ) as events:
                answer = events.get_final_completion()
        else:
            answer = oai.chat.completions.create(
                model="agent", messages=messages, tools=OPENAI_TOOLS
            )
        message = answer.choices[0].message
        if not message.tool_calls:
            break
        assert answer.choices[0].finish_reason == "tool_calls"
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            result = _run_tool(json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    assert rounds == 2
    assert answer.choices[0].finish_reason == "stop"
    assert message.content is not None and "18C and sunny in sim" in message.content


def test_a_forced_tool_choice_is_still_obeyed_after_a_tool_result(oai: openai.OpenAI) -> None:
    messages = _after_a_tool_call(ASK, '{"city": "Lisbon"}', "18C")
    answer = oai.chat.completions.create(
        model="agent", messages=messages, tools=OPENAI_TOOLS, tool_choice="required"
    )
    assert answer.choices[0].message.tool_calls
    # and a plain conversation without tool results still calls its tool
    first = oai.chat.completions.create(model="agent", messages=messages[:1], tools=OPENAI_TOOLS)
    assert first.choices[0].message.tool_calls


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_tool_use_loop_ends_after_the_tool_result(
    claude: anthropic.Anthropic, stream: bool
) -> None:
    messages: list[Any] = [{"role": "user", "content": ASK}]
    rounds = 0
    while True:
        rounds += 1
        assert rounds <= 3, "the loop never ended: the sim keeps calling tools"
        if stream:
            with claude.messages.stream(
                model="agent", max_tokens=200, messages=messages, tools=ANTHROPIC_TOOLS
            ) as events:
                answer = events.get_final_message()
        else:
            answer = claude.messages.create(
                model="agent", max_tokens=200, messages=messages, tools=ANTHROPIC_TOOLS
            )
        uses = [block for block in answer.content if block.type == "tool_use"]
        if not uses:
            break
        assert answer.stop_reason == "tool_use"
        messages.append({"role": "assistant", "content": [b.model_dump() for b in answer.content]})
        results = [
            {"type": "tool_result", "tool_use_id": use.id, "content": _run_tool(use.input)}  # type: ignore[arg-type]
            for use in uses
        ]
        messages.append({"role": "user", "content": results})
    assert rounds == 2
    assert answer.stop_reason == "end_turn"
    (block,) = answer.content
    assert block.type == "text" and "18C and sunny in sim" in block.text


# --- JSON mode -----------------------------------------------------------------------------

SCHEMAS = {
    "nested": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18},
            "role": {"enum": ["admin", "user"]},
            "tags": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 2,
                "uniqueItems": True,
            },
            "address": {"$ref": "#/$defs/address"},
            "scores": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}},
            "nickname": {"type": ["string", "null"]},
        },
        "required": ["name", "age", "role", "tags", "address", "scores", "nickname"],
        "additionalProperties": False,
        "$defs": {
            "address": {
                "type": "object",
                "properties": {
                    "zip": {"type": "string", "maxLength": 2},
                    "lines": {"type": "array"},
                },
                "required": ["zip", "lines"],
            }
        },
    },
    "formats_and_bounds": {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date"},
            "email": {"type": "string", "format": "email"},
            "id": {"type": "string", "format": "uuid"},
            "code": {"type": "string", "minLength": 5, "maxLength": 5},
            "even": {"type": "integer", "minimum": 3, "multipleOf": 2},
            "below": {"type": "number", "exclusiveMaximum": 0},
            "ratio": {"type": "number", "minimum": 0, "maximum": 0.5},
        },
        "required": ["when", "email", "id", "code", "even", "below", "ratio"],
    },
    "all_of_and_any_of": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"b": {"type": "boolean"}}, "required": ["b"]},
        ],
        "properties": {"c": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 4}]}},
        "required": ["c"],
        "minProperties": 3,
    },
}


def _valid(value: Any, schema: dict[str, Any]) -> None:
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    jsonschema.Draft202012Validator(schema, format_checker=checker).validate(value)


@pytest.mark.parametrize("name", SCHEMAS)
@pytest.mark.parametrize("stream", [False, True])
def test_openai_json_schema_answers_a_valid_instance(
    oai: openai.OpenAI, name: str, stream: bool
) -> None:
    schema = SCHEMAS[name]
    response_format: Any = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    messages: Any = [{"role": "user", "content": "Describe a person."}]
    if stream:
        chunks = oai.chat.completions.create(
            model="agent", messages=messages, response_format=response_format, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        answer = oai.chat.completions.create(
            model="agent", messages=messages, response_format=response_format
        )
        text = answer.choices[0].message.content or ""
    _valid(json.loads(text), schema)


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_structured_output_and_forced_tool_answer_valid_instances(
    claude: anthropic.Anthropic, stream: bool
) -> None:
    schema = SCHEMAS["formats_and_bounds"]
    messages: Any = [{"role": "user", "content": "Fill the form."}]
    output = {"format": {"type": "json_schema", "schema": schema}}
    kwargs: Any = {"model": "agent", "max_tokens": 500, "messages": messages}
    if stream:
        with claude.messages.stream(**kwargs, extra_body={"output_config": output}) as events:
            answer = events.get_final_message()
    else:
        answer = claude.messages.create(**kwargs, extra_body={"output_config": output})
    (block,) = answer.content
    assert block.type == "text"
    _valid(json.loads(block.text), schema)
    # the forced-tool technique: the tool's input is the JSON answer
    tool = {"name": "json_output", "description": "the answer", "input_schema": SCHEMAS["nested"]}
    choice: Any = {"type": "tool", "name": "json_output"}
    if stream:
        with claude.messages.stream(**kwargs, tools=[tool], tool_choice=choice) as events:
            answer = events.get_final_message()
    else:
        answer = claude.messages.create(**kwargs, tools=[tool], tool_choice=choice)
    (use,) = answer.content
    assert use.type == "tool_use" and use.name == "json_output"
    _valid(use.input, SCHEMAS["nested"])


PROMPTS = {
    'Answer with an instance of {"type": "object", "properties": {"n": {"type": "integer"}},'
    ' "required": ["n"]}': ["n"],
    "Give me a JSON object with keys: title, year and rating.": ["title", "year", "rating"],
    "Answer in JSON with the fields `city` and `country`.": ["city", "country"],
    'Reply as JSON like {"verdict": "yes", "confidence": 0.9} and nothing else.': [
        "verdict",
        "confidence",
    ],
}


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("stream", [False, True])
def test_openai_json_object_has_the_keys_the_prompt_asks_for(
    oai: openai.OpenAI, prompt: str, stream: bool
) -> None:
    messages: Any = [{"role": "user", "content": prompt}]
    response_format: Any = {"type": "json_object"}
    if stream:
        chunks = oai.chat.completions.create(
            model="agent", messages=messages, response_format=response_format, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        answer = oai.chat.completions.create(
            model="agent", messages=messages, response_format=response_format
        )
        text = answer.choices[0].message.content or ""
    assert list(json.loads(text)) == PROMPTS[prompt]


def test_json_object_without_named_keys_and_after_a_tool_result(oai: openai.OpenAI) -> None:
    plain = oai.chat.completions.create(
        model="agent",
        messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(plain.choices[0].message.content or "") == {"reply": "Plain reply."}
    # a tool result in JSON mode: the JSON answer, not another tool call
    messages = _after_a_tool_call("Weather as JSON with keys: city, summary", "{}", "18C")
    answer = oai.chat.completions.create(
        model="agent",
        messages=messages,
        tools=OPENAI_TOOLS,
        response_format={"type": "json_object"},
    )
    assert list(json.loads(answer.choices[0].message.content or "")) == ["city", "summary"]


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_system_prompt_asking_for_json_gets_the_keys(
    claude: anthropic.Anthropic, stream: bool
) -> None:
    """Anthropic has no json_object mode: the gateway (and clients) ask in the system prompt."""
    kwargs: Any = {
        "model": "agent",
        "max_tokens": 200,
        "system": "Respond with one valid JSON object and nothing else.",
        "messages": [{"role": "user", "content": "Rate it. keys: score, reason"}],
    }
    if stream:
        with claude.messages.stream(**kwargs) as events:
            answer = events.get_final_message()
    else:
        answer = claude.messages.create(**kwargs)
    (block,) = answer.content
    assert block.type == "text"
    assert json.loads(block.text) == {"score": "sim", "reason": "sim"}


# --- documentation -------------------------------------------------------------------------


def test_sim_help_documents_every_config_field() -> None:
    result = turnout_cli("sim", "--help")
    assert result.returncode == 0, result.stderr
    for field in [*SimBehaviour.model_fields, *SimOutage.model_fields]:
        assert f"{field}:" in CONFIG_HELP, field
        assert f"{field}:" in result.stdout, field
    assert "seed:" in result.stdout and "models:" in result.stdout


def test_the_help_example_is_a_valid_sim_file(tmp_path: Path) -> None:
    example = CONFIG_HELP.split("config file (YAML):\n", 1)[1].split("\n  Faults", 1)[0]
    path = tmp_path / "sim.yaml"
    path.write_text(example)
    behaviours, seed = load_sim_file(path)
    assert seed == 7 and set(behaviours) == {"steady", "tailed", "flaky"}
    assert behaviours["flaky"].outages[0].end == 20


def test_readme_documents_every_config_field() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Simulator", 1)[1].split("\n## ", 1)[0]
    for field in SimBehaviour.model_fields:
        assert f"`{field}`" in section, field


def _after_a_tool_call(ask: str, arguments: str, result: str) -> list[Any]:
    """An OpenAI conversation that ends with get_weather's result."""
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather"}}
    call["function"]["arguments"] = arguments  # type: ignore[index]
    return [
        {"role": "user", "content": ask},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": result},
    ]
