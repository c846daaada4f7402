"""The semantic response cache (route `cache: {mode: semantic}`), end to end: real gateway
processes, the simulator on a real port as the chat and the embeddings upstream (its vectors
are hashed bags of words and trigrams: a paraphrase is near, an unrelated text far), the
official openai and anthropic SDKs as clients, the real Redis for two gateways sharing the
vectors, and the ledger as the gateway wrote it."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.conftest import GatewayProcess, ledger_rows, turnout_cli
from tests.services import redis_url
from tests.test_cache import ask_anthropic, ask_openai
from tests.upstreams import SharedSim, shared_sim
from turnout.sim.embeddings import DEFAULT_DIMENSIONS, unit_vector

FIRST = "Paris is the capital of France."
LATER = "an answer only a call that reached the upstream gets"
BEHAVIOURS = {
    "alpha": {"reply": FIRST, "tokens_per_second": 5000},
    "embedder": {},
}
PRICES = {"alpha": {"input": 1.0, "output": 2.0}, "embedder": {"input": 0.02, "output": 0.0}}

QUESTION = "What is the capital of France?"
PARAPHRASE = "what's the capital of France"
UNRELATED = "How do I bake sourdough bread at home?"


def cosine(a: str, b: str) -> float:
    """The similarity the gateway computes for two texts embedded by the simulator."""
    x, y = unit_vector(a, DEFAULT_DIMENSIONS), unit_vector(b, DEFAULT_DIMENSIONS)
    return math.fsum(p * q for p, q in zip(x, y, strict=True))


NEAR = cosine(QUESTION, PARAPHRASE)


def _config(
    sim: SharedSim, threshold: float = 0.8, more: dict[str, Any] | None = None, **top: Any
) -> dict[str, Any]:
    cache = {"mode": "semantic", "embed_route": "embed", "threshold": threshold, "ttl": "1h"}
    cache.update(more or {})
    models: dict[str, Any] = {n: {"provider": "sim", "price": p} for n, p in PRICES.items()}
    models["embedder"]["supports"] = ["embeddings"]
    return {
        "providers": {"sim": {"kind": "openai", "base_url": sim.base_url}},
        "models": models,
        "routes": {
            "chat": {"targets": ["alpha"], "cache": cache},
            "embed": {"targets": ["embedder"], "retry": {"attempts": 1}},
        },
        **top,
    }


def _buckets(store: redis.Redis, prefix: str) -> list[bytes]:
    """The semantic buckets' hashes in Redis (each has its order beside it)."""
    keys = store.keys(f"{prefix}:cachevec:*")
    return [k for k in keys if not k.endswith(b"#order")]


def _ledger(gateway: GatewayProcess, tmp_path: Path) -> list[Any]:
    gateway.stop()  # the ledger is drained on exit
    return sorted(ledger_rows("sqlite", str(tmp_path / "turnout.db")), key=lambda r: r.started_at)


def test_the_sim_embeds_paraphrases_near_and_unrelated_texts_far() -> None:
    # what the tests below rely on, measured on the simulator's own vectors
    assert 0.8 < NEAR < 0.99
    assert cosine(QUESTION, QUESTION.lower().rstrip("?")) == pytest.approx(1.0)
    assert abs(cosine(QUESTION, UNRELATED)) < 0.3


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_paraphrase_gets_the_earlier_answer_and_an_unrelated_prompt_does_not(
    gateway_factory, tmp_path, sdk, stream
) -> None:
    ask = {"openai": ask_openai, "anthropic": ask_anthropic}[sdk]
    with shared_sim(BEHAVIOURS) as sim:
        gateway = gateway_factory(_config(sim))
        text, headers, live_kinds = ask(gateway, stream, QUESTION)
        assert (text, headers["x-turnout-cache"]) == (FIRST, "miss")
        sim.set("alpha", reply=LATER, tokens_per_second=5000)  # a live answer differs now

        again, headers, kinds = ask(gateway, stream, PARAPHRASE)
        assert again == FIRST  # the earlier prompt's answer, byte for byte
        similarity = float(headers["x-turnout-cache-similarity"])
        assert similarity == pytest.approx(NEAR, abs=1e-4)
        assert headers["x-turnout-cache"] == f"similar({math.floor(similarity * 100) / 100:.2f})"
        assert (
            headers["x-turnout-attempts"] == "0" and float(headers["x-turnout-cache-saved-usd"]) > 0
        )
        assert kinds == live_kinds  # a replayed stream has the live stream's shape

        text, headers, _ = ask(gateway, stream, UNRELATED)
        assert (text, headers["x-turnout-cache"]) == (LATER, "miss")
        assert "x-turnout-cache-similarity" not in headers
        # the identical question is an exact hit: found without asking the embeddings route
        embedded = sim.requests("embedder")
        assert ask(gateway, stream, QUESTION)[1]["x-turnout-cache"] == "hit"
        assert sim.requests("embedder") == embedded == 3
        assert sim.requests("alpha") == 2
        counts = gateway.get("/health").json()["cache"]
        assert (counts["hit"], counts["similar"], counts["miss"]) == (1, 1, 2)
        rows = _ledger(gateway, tmp_path)
    chat = [r for r in rows if r.route == "chat"]
    assert [r.cache for r in chat] == ["miss", "similar", "miss", "hit"]
    first, similar = chat[0], chat[1]
    assert similar.cache_similarity == pytest.approx(similarity, abs=1e-4)
    assert similar.cost_usd == 0 and similar.prompt_tokens == similar.completion_tokens == 0
    assert similar.cache_saved_usd == pytest.approx(first.cost_usd) and first.cost_usd > 0
    assert first.cache_similarity is None and chat[3].cache_similarity is None
    # what the embeddings cost is in the ledger too: one row per query, on the embed route
    embeds = [r for r in rows if r.route == "embed"]
    assert len(embeds) == 3 and all(r.status == 200 and r.cost_usd > 0 for r in embeds)
    # `turnout report` counts a semantic hit as a hit, its saving as the cache's
    config = str(tmp_path / f"turnout-{gateway.port}.yaml")
    env = {"TURNOUT_DATA_DIR": str(tmp_path)}
    report = turnout_cli("report", "-c", config, "--since", "1h", "--format", "json", env=env)
    assert report.returncode == 0, report.stderr
    [route] = [g for g in json.loads(report.stdout)["routes"] if g["name"] == "chat"]
    assert (route["cache_hits"], route["cache_misses"]) == (2, 2)
    assert route["cache_saved_usd"] == pytest.approx(
        similar.cache_saved_usd + chat[3].cache_saved_usd
    )


def test_the_threshold_decides(gateway_factory) -> None:
    with shared_sim(BEHAVIOURS) as sim:
        above = gateway_factory(_config(sim, threshold=round(NEAR + 0.005, 3)))
        below = gateway_factory(_config(sim, threshold=round(NEAR - 0.005, 3)))
        for gateway in (above, below):
            assert ask_openai(gateway, False, QUESTION)[1]["x-turnout-cache"] == "miss"
        assert ask_openai(above, False, PARAPHRASE)[1]["x-turnout-cache"] == "miss"
        assert ask_openai(below, False, PARAPHRASE)[1]["x-turnout-cache"].startswith("similar(")
        assert sim.requests("alpha") == 3


def test_only_the_same_context_and_parameters_match(gateway_factory, tmp_path) -> None:
    with shared_sim(BEHAVIOURS) as sim:
        gateway = gateway_factory(_config(sim, threshold=0.8))
        client_ask = ask_openai
        assert client_ask(gateway, False, QUESTION)[1]["x-turnout-cache"] == "miss"
        # other parameters: another answer may come, so the paraphrase is not matched
        _, headers, _ = client_ask(gateway, False, PARAPHRASE, max_tokens=5)
        assert headers["x-turnout-cache"] == "miss"
        # another conversation before the last message: not matched either
        import openai

        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="chat",
            messages=[
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": PARAPHRASE},
            ],
        )
        assert raw.headers["x-turnout-cache"] == "miss"
        # the same context and parameters: matched
        assert client_ask(gateway, False, PARAPHRASE)[1]["x-turnout-cache"].startswith("similar(")
        # a sampled request (temperature > 0) asks the cache nothing, as in exact mode
        _, headers, _ = client_ask(gateway, False, QUESTION, temperature=0.9)
        assert headers["x-turnout-cache"] == "bypass"
        assert sim.requests("alpha") == 4


def test_two_gateways_share_semantic_hits_through_redis_and_a_clear_forgets_them(
    gateway_factory,
) -> None:
    prefix = f"turnout-test-{uuid.uuid4().hex[:8]}"
    state = {"backend": "redis", "url": redis_url(), "prefix": prefix}
    store = redis.Redis.from_url(redis_url())
    try:
        with shared_sim(BEHAVIOURS) as sim:
            first = gateway_factory(_config(sim, state=state))
            second = gateway_factory(_config(sim, state=state))
            assert ask_openai(first, True, QUESTION)[1]["x-turnout-cache"] == "miss"
            [bucket] = _buckets(store, prefix)  # the vector, beside the answer
            assert store.zcard(bucket + b"#order") == 1
            assert 0 < store.pttl(bucket) <= 3600 * 1000
            for gateway in (second, first):  # each searches its own mirror of the bucket
                text, headers, _ = ask_openai(gateway, False, PARAPHRASE)
                assert (text, headers["x-turnout-cache"][:8]) == (FIRST, "similar(")
            assert sim.requests("alpha") == 1

            cleared = turnout_cli("cache", "clear", "chat", "--url", second.url, "--json")
            assert cleared.returncode == 0, cleared.stderr
            assert store.keys(f"{prefix}:cachevec:*") == []
            # the first gateway's mirror still held the vector: the bucket gone, it is dropped
            assert ask_openai(first, False, PARAPHRASE)[1]["x-turnout-cache"] == "miss"
            assert sim.requests("alpha") == 2
            # and a bucket made again after the clear (another epoch) is mirrored afresh
            assert ask_openai(second, False, QUESTION)[1]["x-turnout-cache"][:8] == "similar("
            assert sim.requests("alpha") == 2
    finally:
        for key in store.scan_iter(match=f"{prefix}:*"):
            store.delete(key)
        store.close()


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_context_keeps_at_most_max_vectors(gateway_factory, backend) -> None:
    prefix = f"turnout-test-{uuid.uuid4().hex[:8]}"
    state = {"backend": backend, "url": redis_url(), "prefix": prefix}
    store = redis.Redis.from_url(redis_url())
    try:
        with shared_sim(BEHAVIOURS) as sim:
            gateway = gateway_factory(_config(sim, more={"max_vectors": 1}, state=state))
            for question in (QUESTION, UNRELATED):  # the second's vector pushes the first out
                assert ask_openai(gateway, False, question)[1]["x-turnout-cache"] == "miss"
            if backend == "redis":
                [bucket] = _buckets(store, prefix)
                assert store.zcard(bucket + b"#order") == 1
                assert store.hlen(bucket) == 1 + 2  # (and the epoch, the counter)
            # the answer is still stored (an exact hit) but no longer found by its meaning
            assert ask_openai(gateway, False, PARAPHRASE)[1]["x-turnout-cache"] == "miss"
            assert ask_openai(gateway, False, QUESTION)[1]["x-turnout-cache"] == "hit"
            assert sim.requests("alpha") == 3
    finally:
        for key in store.scan_iter(match=f"{prefix}:*"):
            store.delete(key)
        store.close()


def test_a_vector_whose_answer_redis_evicted_is_a_miss(gateway_factory) -> None:
    # Redis' memory policy may evict an answer while its vector stays (another key): the
    # match is then looked up, found gone, and the request answered upstream
    prefix = f"turnout-test-{uuid.uuid4().hex[:8]}"
    state = {"backend": "redis", "url": redis_url(), "prefix": prefix}
    store = redis.Redis.from_url(redis_url())
    try:
        with shared_sim(BEHAVIOURS) as sim:
            gateway = gateway_factory(_config(sim, state=state))
            assert ask_openai(gateway, False, QUESTION)[1]["x-turnout-cache"] == "miss"
            sim.set("alpha", reply=LATER, tokens_per_second=5000)
            assert ask_openai(gateway, False, PARAPHRASE)[1]["x-turnout-cache"][:8] == "similar("
            [answer] = store.keys(f"{prefix}:cache:*")
            store.delete(answer)  # as an eviction would
            assert len(_buckets(store, prefix)) == 1  # the vector is still there
            text, headers, _ = ask_openai(gateway, False, PARAPHRASE)
            assert (text, headers["x-turnout-cache"]) == (LATER, "miss")
            assert sim.requests("alpha") == 2
    finally:
        for key in store.scan_iter(match=f"{prefix}:*"):
            store.delete(key)
        store.close()


def test_a_failing_embeddings_route_leaves_the_exact_cache_and_never_fails_a_request(
    gateway_factory, tmp_path
) -> None:
    with shared_sim({**BEHAVIOURS, "embedder": {"error_rate": {500: 1.0}}}) as sim:
        gateway = gateway_factory(_config(sim))
        for question, verdict in ((QUESTION, "miss"), (PARAPHRASE, "miss"), (QUESTION, "hit")):
            text, headers, _ = ask_openai(gateway, False, question)
            assert (text, headers["x-turnout-cache"]) == (FIRST, verdict)
        assert sim.requests("alpha") == 2
        warnings = [line for line in gateway.log().splitlines() if " WARNING " in line]
        assert sum("embeddings route embed failed" in line for line in warnings) == 1
        rows = _ledger(gateway, tmp_path)
    embeds = [r for r in rows if r.route == "embed"]
    assert len(embeds) == 2 and all(r.status >= 500 and r.cost_usd == 0 for r in embeds)
    assert [r.status for r in rows if r.route == "chat"] == [200, 200, 200]


def _check(tmp_path: Path, cache: dict[str, Any], embed_supports: list[str]) -> str:
    """`turnout check` on a config with this chat route cache: its output, as the user reads
    it (stderr, then stdout)."""
    config = {
        "providers": {"sim": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {
            "alpha": {"provider": "sim"},
            "e": {"provider": "sim", "supports": embed_supports},
        },
        "routes": {"chat": {"targets": ["alpha"], "cache": cache}, "embed": {"targets": ["e"]}},
    }
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump(config))
    result = turnout_cli("check", "-c", str(path))
    return f"{result.returncode}\n{result.stderr}\n{result.stdout}"


def test_the_config_names_an_embeddings_route_for_semantic_mode(tmp_path) -> None:
    missing = _check(tmp_path, {"mode": "semantic"}, ["embeddings"])
    assert missing.startswith("2\nturnout: config error")  # exit status 2, as any config error
    assert "routes.chat.cache: mode semantic needs `embed_route`" in missing
    chat = _check(tmp_path, {"mode": "semantic", "embed_route": "embed"}, [])
    assert "routes.chat.cache.embed_route: 'embed' is not an embeddings route" in chat
    high = _check(
        tmp_path, {"mode": "semantic", "embed_route": "embed", "threshold": 1.5}, ["embeddings"]
    )
    assert "routes.chat.cache.threshold" in high and high.startswith("2")
    good = _check(
        tmp_path, {"mode": "semantic", "embed_route": "e", "threshold": 0.9}, ["embeddings"]
    )
    # a valid config: checked against its upstreams (none listens here), no config error
    assert "config error" not in good and "turnout check" in good, good
