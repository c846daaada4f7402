"""Request-aware routing and the structured-output guard, through a real gateway process."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import aiohttp
import openai
import pytest

from tests.conftest import http, sdk_client
from tests.upstreams import shared_sim

CAPABLE = ["tools", "json", "vision"]
A = {"reply": "from a", "tokens_per_second": 5000}
B = {"reply": "from b", "tokens_per_second": 5000}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string"}},
                "required": ["q"],
            },
        },
    }
]


def _config(sim, models: dict[str, dict], route: dict) -> dict:
    return {
        "providers": {"sim": {"kind": "openai", "base_url": sim.base_url}},
        "models": {name: {"provider": "sim", **entry} for name, entry in models.items()},
        "routes": {"chat": route},
    }


def _raw(gateway, **kwargs):
    client = sdk_client(gateway)
    extra_headers = kwargs.pop("headers", None)
    raw = client.chat.completions.with_raw_response.create(
        model="chat",
        messages=kwargs.pop("messages", [{"role": "user", "content": "hi"}]),
        extra_headers=extra_headers,
        **kwargs,
    )
    return raw.parse(), raw.headers


def test_tools_request_skips_a_toolless_primary(gateway_factory) -> None:
    with shared_sim({"a": A, "b": B}) as sim:
        models = {"a": {"supports": ["json"]}, "b": {"supports": CAPABLE}}
        gateway = gateway_factory(_config(sim, models, {"targets": ["a", "b"]}))
        answer, headers = _raw(gateway, tools=TOOLS)
        assert answer.choices[0].message.tool_calls[0].function.name == "lookup"
        assert headers["x-turnout-model"] == "b"
        assert headers["x-turnout-fallback"] == "a=capability(no tools)"
        assert headers["x-turnout-attempts"] == "1"
        assert sim.requests("a") == 0  # skipped, not tried
        answer, headers = _raw(gateway)  # without tools, the primary serves
        assert headers["x-turnout-model"] == "a"


def test_long_prompt_goes_straight_to_the_long_context_model(gateway_factory) -> None:
    with shared_sim({"a": A, "b": B}) as sim:
        models = {
            # between the prompt's cheap bounds (3,600 words, 18,000 bytes): it is counted
            "a": {"supports": CAPABLE, "context_window": 3800},
            "b": {"supports": CAPABLE, "context_window": 200000},
        }
        gateway = gateway_factory(_config(sim, models, {"targets": ["a", "b"]}))
        long = "The quick brown fox jumps over the lazy dog. " * 400  # ~4000 tokens
        _, headers = _raw(gateway, messages=[{"role": "user", "content": long}], max_tokens=100)
        assert headers["x-turnout-model"] == "b"
        assert headers["x-turnout-attempts"] == "1"
        reason = headers["x-turnout-fallback"]
        assert reason.startswith("a=context_length(") and reason.endswith("+100>3800)")
        counted = int(reason.split("(")[1].split("+")[0])
        assert 3900 < counted < 4300  # tiktoken's count of the prompt
        assert sim.requests("a") == 0
        # a short prompt still fits the primary: no count is even needed
        assert _raw(gateway, max_tokens=100)[1]["x-turnout-model"] == "a"


def test_no_capable_target_is_a_400_that_names_the_capability(gateway_factory) -> None:
    with shared_sim({"a": A}) as sim:
        models = {"a": {"supports": [], "context_window": 1000}}
        gateway = gateway_factory(_config(sim, models, {"targets": ["a"]}))
        with pytest.raises(openai.BadRequestError) as bad:
            _raw(gateway, tools=TOOLS)
        assert bad.value.code == "capability_missing"
        assert "a: capability(no tools)" in bad.value.message
        image = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            }
        ]
        with pytest.raises(openai.BadRequestError) as bad:
            _raw(gateway, messages=image)
        assert "no vision" in bad.value.message
        with pytest.raises(openai.BadRequestError) as bad:
            _raw(gateway, messages=[{"role": "user", "content": "word " * 3000}])
        assert bad.value.code == "context_length_exceeded"


async def _count_models(gateway, n: int, concurrency: int = 16) -> Counter[str]:
    body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    counts: Counter[str] = Counter()
    queue = list(range(n))

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            queue.pop()
            async with session.post(
                gateway.base_url + "/chat/completions",
                data=body,
                headers={"content-type": "application/json"},
            ) as response:
                assert response.status == 200
                counts[response.headers["x-turnout-model"]] += 1
                await response.read()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return counts


def test_weighted_split_lands_within_three_percent(gateway_factory) -> None:
    with shared_sim({"a": A, "b": B}) as sim:
        models = {"a": {"supports": CAPABLE}, "b": {"supports": CAPABLE}}
        route = {"targets": ["a", "b"], "policy": "weighted", "weights": {"a": 90, "b": 10}}
        gateway = gateway_factory(_config(sim, models, route))
        counts = asyncio.run(_count_models(gateway, 2000))
    assert sum(counts.values()) == 2000
    assert abs(counts["a"] / 2000 - 0.90) <= 0.03
    assert abs(counts["b"] / 2000 - 0.10) <= 0.03


def test_cheapest_picks_the_lowest_expected_cost(gateway_factory) -> None:
    with shared_sim({"a": A, "b": B, "c": B}) as sim:
        models = {
            "a": {"supports": CAPABLE, "price": {"input": 1.0, "output": 5.0}},
            "b": {"supports": CAPABLE, "price": {"input": 0.1, "output": 0.4}},
            "c": {"supports": CAPABLE, "price": {"input": 0.05, "output": 2.0}},
        }
        route = {"targets": ["a", "b", "c"], "policy": "cheapest"}
        gateway = gateway_factory(_config(sim, models, route))
        # long answer expected: output price dominates, b is cheapest
        assert _raw(gateway, max_tokens=1000)[1]["x-turnout-model"] == "b"
        # a huge prompt and a one-token answer: input price dominates, c is cheapest
        big = [{"role": "user", "content": "lorem ipsum dolor " * 2000}]
        assert _raw(gateway, messages=big, max_tokens=1)[1]["x-turnout-model"] == "c"


def test_fastest_picks_the_lowest_recent_latency(gateway_factory) -> None:
    with shared_sim({"slow": {**A, "ttft": "150ms"}, "quick": {**B, "ttft": "10ms"}}) as sim:
        models = {"slow": {"supports": CAPABLE}, "quick": {"supports": CAPABLE}}
        route = {"targets": ["slow", "quick"], "policy": "fastest"}
        gateway = gateway_factory(_config(sim, models, route))
        seen = [
            _raw(gateway, stream=False)[1]["x-turnout-model"] for _ in range(2)
        ]  # unmeasured models are tried first: each gets measured once
        assert set(seen) == {"slow", "quick"}
        picks = Counter(_raw(gateway)[1]["x-turnout-model"] for _ in range(10))
        assert picks == {"quick": 10}


def test_sessions_stay_on_one_model_and_move_whole(gateway_factory) -> None:
    with shared_sim({"a": A, "b": B}) as sim:
        models = {"a": {"supports": CAPABLE}, "b": {"supports": CAPABLE}}
        route = {
            "targets": ["a", "b"],
            "policy": "weighted",
            "weights": {"a": 50, "b": 50},
            "consistency": {"mode": "session"},
        }
        gateway = gateway_factory(_config(sim, models, route))
        placed: dict[str, set[str]] = {}
        for step in range(5):
            for session in range(10):
                headers = _raw(gateway, headers={"x-turnout-session": f"s{session}"})[1]
                placed.setdefault(f"s{session}", set()).add(headers["x-turnout-model"])
        assert all(len(models_seen) == 1 for models_seen in placed.values()), placed
        assert {m for s in placed.values() for m in s} == {"a", "b"}  # weighted spread them
        on_a = [s for s, m in placed.items() if m == {"a"}]

        sim.set("a", error_rate={"500": 1.0})  # kill a: its sessions move, as wholes
        for step in range(3):
            for session in on_a:
                headers = _raw(gateway, headers={"x-turnout-session": session})[1]
                assert headers["x-turnout-model"] == "b"
        sim.set("a", **A)
        for session in on_a:  # and they stay together where they moved
            assert (
                _raw(gateway, headers={"x-turnout-session": session})[1]["x-turnout-model"] == "b"
            )


def test_prefer_the_stronger_model_else_stay_on_the_session(gateway_factory) -> None:
    with shared_sim({"strong": A, "cheap": B}) as sim:
        models = {"strong": {"supports": CAPABLE}, "cheap": {"supports": CAPABLE}}
        route = {
            "targets": ["cheap", "strong"],
            "consistency": {"mode": "session", "prefer": ["strong"]},
        }
        gateway = gateway_factory(_config(sim, models, route))
        session = {"x-turnout-session": "plan-coach-1"}
        assert _raw(gateway, headers=session)[1]["x-turnout-model"] == "strong"
        sim.set("strong", rate_limit_rate=1.0, retry_after=30)
        headers = _raw(gateway, headers=session)[1]  # the plan step: strong throttled
        assert headers["x-turnout-model"] == "cheap"
        for _ in range(3):  # the coach steps follow the session, no 429 on the way
            headers = _raw(gateway, headers=session)[1]
            assert headers["x-turnout-model"] == "cheap"
            assert headers["x-turnout-attempts"] == "1"


def _schema(fields: int) -> dict:
    properties = {f"field_{i}": {"type": "string"} for i in range(fields)}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_thirteen_stage_pipeline_fails_over_on_the_forty_field_stage(
    gateway_factory, stream
) -> None:
    behaviours = {"candidate": {"json_fields_limit": 5}, "stable": {}}
    with shared_sim(behaviours) as sim:
        models = {"candidate": {"supports": CAPABLE}, "stable": {"supports": CAPABLE}}
        route = {"targets": ["candidate", "stable"], "guard": {"buffer_streams": True}}
        gateway = gateway_factory(_config(sim, models, route))
        client = sdk_client(gateway)
        stage_fields = [3, 2, 4, 40, 5, 3, 2, 4, 5, 1, 3, 2, 4]
        served = []
        for stage, fields in enumerate(stage_fields, 1):
            fmt = {
                "type": "json_schema",
                "json_schema": {"name": f"stage{stage}", "schema": _schema(fields)},
            }
            messages = [{"role": "user", "content": f"stage {stage}"}]
            if stream:
                with client.chat.completions.with_streaming_response.create(
                    model="chat", messages=messages, response_format=fmt, stream=True
                ) as response:
                    text = "".join(
                        c.choices[0].delta.content or "" for c in response.parse() if c.choices
                    )
                    headers = response.headers
            else:
                raw = client.chat.completions.with_raw_response.create(
                    model="chat", messages=messages, response_format=fmt
                )
                text, headers = raw.parse().choices[0].message.content, raw.headers
            value = json.loads(text)  # the client never receives invalid JSON
            assert sorted(value) == sorted(_schema(fields)["properties"])
            assert headers["x-turnout-guard" if not stream else "x-turnout-model"]
            served.append((headers["x-turnout-model"], headers.get("x-turnout-fallback")))
        assert served[3] == ("stable", "candidate=invalid_output(schema)")
        assert all(model == "candidate" for model, _ in served[:3] + served[4:])
        health = gateway.get("/health/providers").json()
        candidate = next(
            t for t in health["routes"]["chat"]["targets"] if t["model"] == "candidate"
        )
        assert candidate["last_error"]["class"] == "invalid_output"
        assert candidate["failures"] == 1


def test_broken_json_is_retried_on_the_same_model_then_fails_over(gateway_factory) -> None:
    with shared_sim({"candidate": {"malformed_rate": 1.0}, "stable": {}}) as sim:
        models = {"candidate": {"supports": CAPABLE}, "stable": {"supports": CAPABLE}}
        route = {"targets": ["candidate", "stable"], "guard": {"retry_same": 1}}
        gateway = gateway_factory(_config(sim, models, route))
        answer, headers = _raw(gateway, response_format={"type": "json_object"})
        json.loads(answer.choices[0].message.content)
        assert headers["x-turnout-model"] == "stable"
        assert headers["x-turnout-attempts"] == "3"  # candidate twice, then stable
        assert headers["x-turnout-fallback"] == "candidate=invalid_output(json)"
        assert headers["x-turnout-guard"] == "valid"


def test_route_output_schema_applies_to_every_answer(gateway_factory) -> None:
    with shared_sim({"sloppy": {"json_fields_limit": 0}, "stable": {}}) as sim:
        models = {"sloppy": {"supports": CAPABLE}, "stable": {"supports": CAPABLE}}
        route = {"targets": ["sloppy", "stable"], "output_schema": _schema(2)}
        gateway = gateway_factory(_config(sim, models, route))
        # the client asked for nothing special: the route asks each model for its schema
        # and holds every answer to it
        answer, headers = _raw(gateway)
        assert sorted(json.loads(answer.choices[0].message.content)) == ["field_0", "field_1"]
        assert headers["x-turnout-fallback"] == "sloppy=invalid_output(schema)"


def test_exclude_header_and_client_policy_override(gateway_factory) -> None:
    with shared_sim({"a": A, "b": B}) as sim:
        models = {"a": {"supports": CAPABLE}, "b": {"supports": CAPABLE}}
        gateway = gateway_factory(_config(sim, models, {"targets": ["a", "b"]}))
        answer, headers = _raw(gateway, headers={"x-turnout-exclude": "a"})
        assert answer.choices[0].message.content == "from b"
        assert headers["x-turnout-fallback"] == "a=excluded"
        assert headers["x-turnout-attempts"] == "1"
        with pytest.raises(openai.BadRequestError) as bad:
            _raw(gateway, headers={"x-turnout-exclude": "a, b"})
        assert bad.value.code == "all_excluded"
        result = http(
            "POST",
            gateway.base_url + "/chat/completions",
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}]}',
        )
        assert result.status == 200
        with pytest.raises(openai.PermissionDeniedError):
            _raw(gateway, headers={"x-turnout-route-policy": "cheapest"})
