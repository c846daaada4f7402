"""The response cache (route `cache:`), end to end: real gateway processes, the simulator on
a real port as the upstream (its /sim/stats count the calls that reached it), the official
openai and anthropic SDKs as clients, the real Redis for two gateways sharing a cache, the
ledger and `turnout report` / `turnout cache clear` as a user runs them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import redis
import yaml

from tests.conftest import GatewayProcess, free_port, http, ledger_rows, turnout_cli
from tests.services import redis_url
from tests.upstreams import SharedSim, shared_sim

FIRST = "the first answer, as the upstream gave it"
CHANGED = "a later answer: only a call that reached the upstream gets this"
BEHAVIOURS = {
    "alpha": {"reply": FIRST, "tokens_per_second": 5000},
    "beta": {"reply": "beta answered", "tokens_per_second": 5000},
}
PRICES = {"alpha": {"input": 1.0, "output": 2.0}, "beta": {"input": 3.0, "output": 15.0}}
CACHE = {"mode": "exact", "ttl": "1h"}


def _config(
    sim: SharedSim,
    cache: dict[str, Any] | None = None,
    targets: tuple[str, ...] = ("alpha",),
    **top: Any,
) -> dict[str, Any]:
    route: dict[str, Any] = {"targets": list(targets), "cache": cache or CACHE}
    return {
        "providers": {"sim": {"kind": "openai", "base_url": sim.base_url}},
        "models": {name: {"provider": "sim", "price": PRICES[name]} for name in PRICES},
        "routes": {"chat": route, "other": {"targets": ["alpha"]}},
        **top,
    }


def _config_path(gateway: GatewayProcess, tmp_path: Path) -> Path:
    return tmp_path / f"turnout-{gateway.port}.yaml"  # where start_gateway wrote it


def _ledger(gateway: GatewayProcess, tmp_path: Path) -> list[Any]:
    gateway.stop()  # the ledger is drained on exit
    return sorted(ledger_rows("sqlite", str(tmp_path / "turnout.db")), key=lambda r: r.started_at)


# --- the two SDKs, each returning (answer text, response headers, stream event kinds) ------


def _openai(gateway: GatewayProcess, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20)


def ask_openai(
    gateway: GatewayProcess,
    stream: bool,
    question: str = "what is a turnout?",
    key: str = "unused",
    headers: dict[str, str] | None = None,
    **params: Any,
) -> tuple[str, Any, list[str]]:
    client = _openai(gateway, key)
    messages = [{"role": "user", "content": question}]
    if not stream:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=messages, extra_headers=headers, **params
        )
        completion = raw.parse()
        assert completion.object == "chat.completion"
        return completion.choices[0].message.content or "", raw.headers, []
    with client.chat.completions.with_streaming_response.create(
        model="chat",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers,
        **params,
    ) as response:
        chunks = list(response.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        kinds = [c.object for c in chunks]
        finish = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finish[-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        return text, response.headers, sorted(set(kinds))


def ask_anthropic(
    gateway: GatewayProcess, stream: bool, question: str = "what is a turnout?"
) -> tuple[str, Any, list[str]]:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": question}]
    if not stream:
        raw = client.messages.with_raw_response.create(
            model="chat", max_tokens=200, messages=messages
        )
        message = raw.parse()
        assert message.stop_reason == "end_turn"
        return "".join(b.text for b in message.content if b.type == "text"), raw.headers, []
    with client.messages.with_streaming_response.create(
        model="chat", max_tokens=200, messages=messages, stream=True
    ) as response:
        events = list(response.parse())
        text = "".join(
            e.delta.text
            for e in events
            if e.type == "content_block_delta" and e.delta.type == "text_delta"
        )
        assert events[0].type == "message_start" and events[-1].type == "message_stop"
        return text, response.headers, sorted({e.type for e in events})


ASK = {"openai": ask_openai, "anthropic": ask_anthropic}


# --- hits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_repeated_requests_are_answered_from_the_cache(
    gateway_factory, tmp_path, sdk, stream
) -> None:
    ask = ASK[sdk]
    with shared_sim(BEHAVIOURS) as sim:
        gateway = gateway_factory(_config(sim))
        text, headers, live_kinds = ask(gateway, stream)
        assert text == FIRST
        assert headers["x-turnout-cache"] == "miss"
        sim.set("alpha", reply=CHANGED, tokens_per_second=5000)  # a live answer differs now
        for _ in range(2):
            again, headers, kinds = ask(gateway, stream)
            assert again == text  # byte for byte the first answer's content
            assert headers["x-turnout-cache"] == "hit"
            assert headers["x-turnout-model"] == "alpha"
            assert headers["x-turnout-attempts"] == "0"
            assert int(headers["age"]) >= 0
            assert float(headers["x-turnout-cache-saved-usd"]) > 0
            assert kinds == live_kinds  # a cached stream has the live stream's shape
        # a stored answer serves the other mode too (stream is not part of what decides it)
        other, headers, _ = ask(gateway, not stream)
        assert other == text and headers["x-turnout-cache"] == "hit"
        assert sim.requests("alpha") == 1  # the upstream saw one call
        assert ask(gateway, stream, "another question")[0] == CHANGED  # still live otherwise
        counts = gateway.get("/health").json()["cache"]
        assert (counts["hit"], counts["miss"], counts["stored"]) == (3, 2, 2)
        rows = _ledger(gateway, tmp_path)
    assert [r.cache for r in rows] == ["miss", "hit", "hit", "hit", "miss"]
    first, hits = rows[0], rows[1:4]
    assert first.cost_usd > 0 and first.cache_saved_usd == 0
    for row in hits:
        assert row.status == 200 and row.outcome == "ok" and row.model == "alpha"
        assert row.cost_usd == 0 and row.baseline_cost_usd == 0
        assert row.prompt_tokens == row.completion_tokens == 0  # nothing reached the upstream
        assert row.cache_saved_usd == pytest.approx(first.cost_usd)
    assert rows[1].stream is stream and rows[3].stream is not stream


def test_the_report_shows_hit_rate_and_cache_savings_apart_from_routing(
    gateway_factory, tmp_path
) -> None:
    with shared_sim(BEHAVIOURS) as sim:
        config = _config(sim)
        config["routes"]["chat"]["baseline"] = "beta"  # routing's savings: against beta
        gateway = gateway_factory(config)
        for _ in range(3):
            ask_openai(gateway, False)
        ask_openai(gateway, False, headers={"cache-control": "no-cache"})
        rows = _ledger(gateway, tmp_path)
    miss = rows[0]
    env = {"TURNOUT_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    path = str(_config_path(gateway, tmp_path))
    report = turnout_cli("report", "-c", path, "--since", "1h", "--format", "json", env=env)
    assert report.returncode == 0, report.stderr
    [chat] = [g for g in json.loads(report.stdout)["routes"] if g["name"] == "chat"]
    assert (chat["cache_hits"], chat["cache_misses"], chat["cache_bypassed"]) == (2, 1, 1)
    assert chat["cache_hit_rate"] == pytest.approx(2 / 3)  # a bypass did not ask the cache
    assert chat["cache_saved_usd"] == pytest.approx(2 * miss.cost_usd)
    # routing's savings count only the two answers made upstream (the miss, the no-cache)
    upstream = [r for r in rows if r.cache in ("miss", "bypass")]
    assert chat["savings_usd"] == pytest.approx(
        sum(r.baseline_cost_usd - r.cost_usd for r in upstream)
    )
    table = turnout_cli("report", "-c", path, "--since", "1h", env=env)
    assert table.returncode == 0, table.stderr
    assert "Response cache since" in table.stdout and "66.7%" in table.stdout


# --- what is and is not cached -----------------------------------------------------------------


def test_client_cache_control_and_sampling_decide(gateway_factory) -> None:
    with shared_sim(BEHAVIOURS) as sim:
        gateway = gateway_factory(_config(sim))
        assert ask_openai(gateway, False)[1]["x-turnout-cache"] == "miss"
        # no-cache: the stored answer is skipped, the upstream answers (and is stored again)
        _, headers, _ = ask_openai(gateway, False, headers={"cache-control": "no-cache"})
        assert headers["x-turnout-cache"] == "bypass" and sim.requests("alpha") == 2
        assert ask_openai(gateway, False)[1]["x-turnout-cache"] == "hit"
        # no-store: answered, and nothing of it kept
        question = "a question asked with no-store"
        _, headers, _ = ask_openai(gateway, False, question, headers={"cache-control": "no-store"})
        assert headers["x-turnout-cache"] == "miss"
        assert ask_openai(gateway, False, question)[1]["x-turnout-cache"] == "miss"
        assert sim.requests("alpha") == 4
        # a sampled request (temperature > 0) wants a fresh sample: neither served nor stored
        for _ in range(2):
            _, headers, _ = ask_openai(gateway, True, "sample me", temperature=0.7)
            assert headers["x-turnout-cache"] == "bypass"
        assert sim.requests("alpha") == 6
        # greedy decoding is cached, and the parameters are part of the key
        assert (
            ask_openai(gateway, False, "sample me", temperature=0)[1]["x-turnout-cache"] == "miss"
        )
        assert ask_openai(gateway, False, "sample me", temperature=0)[1]["x-turnout-cache"] == "hit"
        _, headers, _ = ask_openai(gateway, False, "sample me", temperature=0, max_tokens=5)
        assert headers["x-turnout-cache"] == "miss"
        # a route without a cache says nothing about one
        client = _openai(gateway)
        raw = client.chat.completions.with_raw_response.create(
            model="other", messages=[{"role": "user", "content": "what is a turnout?"}]
        )
        assert "x-turnout-cache" not in raw.headers


def test_a_route_may_cache_sampled_answers(gateway_factory) -> None:
    with shared_sim(BEHAVIOURS) as sim:
        gateway = gateway_factory(_config(sim, {**CACHE, "cache_sampled": True}))
        assert ask_openai(gateway, False, temperature=0.7)[1]["x-turnout-cache"] == "miss"
        assert ask_openai(gateway, False, temperature=0.7)[1]["x-turnout-cache"] == "hit"
        assert sim.requests("alpha") == 1


def _keys(tmp_path: Path, config_path: Path, *specs: tuple[str, ...]) -> list[str]:
    """Keys made with `turnout keys create` in the gateway's own ledger."""
    made = []
    for name, *options in specs:
        result = turnout_cli(
            "keys", "--config", str(config_path), "create", name, *options,
            env={"TURNOUT_DATA_DIR": str(tmp_path)},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        pairs = (line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
        made.append({k.strip(): v.strip() for k, v in pairs}["key"])
    return made


@pytest.mark.parametrize("shared", [False, True], ids=["per-key", "shared"])
def test_api_keys_see_only_their_own_hits_unless_shared(gateway_factory, tmp_path, shared) -> None:
    with shared_sim(BEHAVIOURS) as sim:
        config = _config(sim, {**CACHE, "share_across_keys": shared}, auth={"required": True})
        gateway = gateway_factory(config)
        alice, bob = _keys(tmp_path, _config_path(gateway, tmp_path), ("alice",), ("bob",))
        assert ask_openai(gateway, False, key=alice)[1]["x-turnout-cache"] == "miss"
        _, headers, _ = ask_openai(gateway, False, key=bob)
        assert headers["x-turnout-cache"] == ("hit" if shared else "miss")
        assert ask_openai(gateway, False, key=alice)[1]["x-turnout-cache"] == "hit"
        assert ask_openai(gateway, False, key=bob)[1]["x-turnout-cache"] == "hit"
        assert sim.requests("alpha") == (1 if shared else 2)


def _reload(gateway: GatewayProcess, tmp_path: Path, config: dict[str, Any]) -> None:
    path = _config_path(gateway, tmp_path)
    path.write_text(yaml.safe_dump(config))
    result = http("POST", gateway.url + "/admin/reload", b"")
    assert result.status == 200, result.body


def test_a_reload_that_changes_the_routes_models_misses(gateway_factory, tmp_path) -> None:
    with shared_sim(BEHAVIOURS) as sim:
        config = _config(sim)
        gateway = gateway_factory(config)
        assert ask_openai(gateway, False)[1]["x-turnout-cache"] == "miss"
        # a reload that leaves the route's models alone keeps its answers
        config["routes"]["chat"]["retry"] = {"attempts": 2}
        _reload(gateway, tmp_path, config)
        assert ask_openai(gateway, False)[1]["x-turnout-cache"] == "hit"
        # one that changes them does not serve what the old models said
        config["routes"]["chat"]["targets"] = ["beta"]
        _reload(gateway, tmp_path, config)
        text, headers, _ = ask_openai(gateway, True)
        assert (text, headers["x-turnout-cache"]) == ("beta answered", "miss")
        assert ask_openai(gateway, False)[1]["x-turnout-cache"] == "hit"  # beta's, stored
        assert sim.requests("alpha") == 1 and sim.requests("beta") == 1


# --- shared through Redis; cleared by the admin endpoint and the CLI ----------------------------


def test_two_gateways_share_hits_through_redis_and_a_clear_reaches_both(
    gateway_factory,
) -> None:
    prefix = f"turnout-test-{uuid.uuid4().hex[:8]}"
    state = {"backend": "redis", "url": redis_url(), "prefix": prefix}
    store = redis.Redis.from_url(redis_url())
    stored = f"{prefix}:cache:*"
    try:
        with shared_sim(BEHAVIOURS) as sim:
            first = gateway_factory(_config(sim, state=state))
            second = gateway_factory(_config(sim, state=state))
            text, headers, _ = ask_openai(first, True)
            assert headers["x-turnout-cache"] == "miss"
            [key] = store.keys(stored)  # stored (with its TTL) by the first gateway
            assert 0 < store.pttl(key) <= 3600 * 1000
            again, headers, _ = ask_openai(second, False)
            assert (again, headers["x-turnout-cache"]) == (text, "hit")
            assert sim.requests("alpha") == 1

            cleared = turnout_cli("cache", "clear", "chat", "--url", second.url, "--json")
            assert cleared.returncode == 0, cleared.stderr
            assert json.loads(cleared.stdout) == {"route": "chat", "cleared": 1}
            assert store.keys(stored) == []
            assert ask_openai(first, False)[1]["x-turnout-cache"] == "miss"
            assert sim.requests("alpha") == 2
    finally:
        for key in store.scan_iter(match=f"{prefix}:*"):
            store.delete(key)
        store.close()


def test_redis_away_makes_misses_never_errors(gateway_factory) -> None:
    state = {"backend": "redis", "url": f"redis://127.0.0.1:{free_port()}/0"}
    with shared_sim(BEHAVIOURS) as sim:
        gateway = gateway_factory(_config(sim, state=state))
        for stream in (False, True, False):
            text, headers, _ = ask_openai(gateway, stream)
            assert (text, headers["x-turnout-cache"]) == (FIRST, "miss")
        assert sim.requests("alpha") == 3
        assert gateway.get("/health").json()["cache"]["shared"] is False
        warnings = [line for line in gateway.log().splitlines() if " WARNING " in line]
        assert any("response cache: Redis unavailable" in line for line in warnings)
        refused = turnout_cli("cache", "clear", "chat", "--url", gateway.url)
        assert refused.returncode == 1 and "could not be cleared" in refused.stderr


def test_clear_needs_an_admin_key_and_forgets_the_route(gateway_factory, tmp_path) -> None:
    with shared_sim(BEHAVIOURS) as sim:
        gateway = gateway_factory(_config(sim, auth={"required": True}))
        path = _config_path(gateway, tmp_path)
        plain, admin = _keys(tmp_path, path, ("plain",), ("ops", "--admin"))
        assert ask_openai(gateway, False, key=plain)[1]["x-turnout-cache"] == "miss"
        assert ask_openai(gateway, False, key=plain)[1]["x-turnout-cache"] == "hit"

        def clear(key: str | None, route: str = "chat") -> Any:
            args = ["cache", "clear", route, "--url", gateway.url, "--json"]
            return turnout_cli(*args, *(["--key", key] if key else []), env={"TURNOUT_KEY": ""})

        refused = clear(None)
        assert refused.returncode == 1 and "API key" in refused.stderr
        refused = clear(plain)
        assert refused.returncode == 1 and "admin key" in refused.stderr
        unknown = clear(admin, "nope")
        assert unknown.returncode == 1 and "No route 'nope'" in unknown.stderr
        assert ask_openai(gateway, False, key=plain)[1]["x-turnout-cache"] == "hit"  # kept
        done = clear(admin)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"route": "chat", "cleared": 1}
        assert ask_openai(gateway, False, key=plain)[1]["x-turnout-cache"] == "miss"
        assert sim.requests("alpha") == 2
