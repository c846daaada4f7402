"""Many replicas, one gateway (issue 17), the last per-process counters: three gateway
processes on three ports, sharing the real Redis (`state`) and PostgreSQL (`ledger`), hedge
once between them (one hedge bucket per route), count an embeddings key's rate limit once,
and raise a budget's soft alert once; and Redis going away fails no hedged request.

The helpers (three `turnout serve` processes with one config) are tests/test_cluster.py's."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

from tests import test_cluster as cluster_helpers
from tests.conftest import free_port
from tests.test_cluster import PRICE, Cluster, _ask, _own_redis, _sim_config
from tests.upstreams import shared_sim

pg_dsn = cluster_helpers.pg_dsn  # a fresh PostgreSQL database: the fleet's one ledger


# --- one hedge cap ----------------------------------------------------------------------------


def _hedged(cluster: Cluster, requests: int, threads: int = 6) -> tuple[Counter[str], int]:
    """`requests` chat requests, round-robin over the processes: (statuses, hedges made)."""
    statuses: Counter[str] = Counter()
    hedges = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal hedges
        status, model, headers = _ask(cluster.client(i))
        with lock:
            statuses[f"{status} {model}"] += 1
            hedges += "x-turnout-hedged" in headers

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(requests)))
    return statuses, hedges


def test_hedges_of_three_processes_stay_within_one_share_of_the_requests(
    pg_dsn, gateway_factory, tmp_path
) -> None:
    max_extra = 0.1  # a bucket banks at most 50 requests' worth: 5 hedges
    with shared_sim({"primary": {"reply": "first"}, "spare": {"reply": "spare"}}) as sim:
        route = {"targets": ["primary", "spare"], "hedge": {"after": 0.3, "max_extra": max_extra}}
        config = _sim_config(sim, {"primary": {}, "spare": {}}, route)
        cluster = Cluster(gateway_factory, tmp_path, pg_dsn, config).start()
        # the primary answers at once: 150 requests fill the route's bucket (50 per process)
        calm, calm_hedges = _hedged(cluster, 150)
        time.sleep(1.5)  # each process's earnings are written (every half second)
        # then it is slow: every request would be hedged if the bucket allowed
        sim.set("primary", reply="first", ttft=2.0)
        slow, slow_hedges = _hedged(cluster, 30)
    assert set(calm) | set(slow) <= {"200 primary", "200 spare"}, (calm, slow)
    # one bucket for the fleet: what it banked (5) plus what the slow requests earned (3),
    # give or take one; a bucket per process would bank 5 each and hedge ~18 of the 30
    assert 5 <= slow_hedges <= 5 + max_extra * 30 + 1, (slow_hedges, slow)
    assert calm_hedges + slow_hedges <= 1 + max_extra * 180 + 1, (calm_hedges, slow_hedges)


def test_redis_away_hedges_carry_on_with_this_process_bucket(
    pg_dsn, gateway_factory, tmp_path
) -> None:
    port = free_port()
    redis_process = _own_redis(port)
    try:
        with shared_sim({"primary": {"ttft": 1.0}, "spare": {"reply": "spare"}}) as sim:
            route = {"targets": ["primary", "spare"], "hedge": {"after": 0.05, "max_extra": 0.5}}
            config = _sim_config(sim, {"primary": {}, "spare": {}}, route)
            config["auth"] = {"required": True}
            config["state"] = {"backend": "redis", "url": f"redis://127.0.0.1:{port}/0"}
            cluster = Cluster(gateway_factory, tmp_path, pg_dsn, config)
            key, admin = cluster.key("busy"), cluster.key("ops", "--admin")
            cluster.start()
            clients = [cluster.client(i, key) for i in range(3)]
            asked = [_ask(clients[i % 3]) for i in range(6)]  # shared
            redis_process.terminate()
            redis_process.wait(10)
            asked += [_ask(clients[i % 3]) for i in range(12)]  # each process's own bucket
            redis_process = _own_redis(port)
            time.sleep(2.5)  # the probe (every second) rejoins it
            asked += [_ask(clients[i % 3]) for i in range(6)]
            time.sleep(1.5)  # (a connection Redis's restart left stale is found and replaced)
            assert {status for status, _, _ in asked} == {200}, asked  # none failed for it
            assert any("x-turnout-hedged" in headers for _, _, headers in asked[6:18])
            for i, gateway in enumerate(cluster.gateways):
                assert "hedge caps are counted in this process" in gateway.log()
                events = [
                    e
                    for e in cluster.events(i, admin)
                    if e["type"] == "shared_state" and e["what"] == "hedge caps"
                ]
                # lost (counting in this process), then rejoined once Redis was back
                assert events and not events[0]["shared"] and events[-1]["shared"], events
    finally:
        redis_process.terminate()
        redis_process.wait(10)


# --- one embeddings rate limit -----------------------------------------------------------------


def _embed(client: openai.OpenAI) -> tuple[int, str]:
    try:
        client.embeddings.create(model="vectors", input="hello there")
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        return exc.status_code, str(body.get("code"))
    return 200, "ok"


def test_an_embeddings_key_rpm_is_counted_once_for_the_fleet(
    pg_dsn, gateway_factory, tmp_path
) -> None:
    with shared_sim({"e": {}}) as sim:
        config = {
            "providers": {"sim": {"kind": "openai", "base_url": sim.base_url}},
            "models": {"e": {"provider": "sim", "supports": ["embeddings"], "price": PRICE}},
            "routes": {"vectors": {"targets": ["e"]}},
            "auth": {"required": True},
        }
        cluster = Cluster(gateway_factory, tmp_path, pg_dsn, config)
        key = cluster.key("embedder", "--rpm", "9")
        cluster.start()
        # 30 round-robin within a few seconds of one minute: 9 for the fleet, not 9 each
        seen = Counter(_embed(cluster.client(i, key)) for i in range(30))
    assert seen == {(200, "ok"): 9, (429, "key_rate_limited"): 21}, seen


def test_an_embeddings_session_stays_on_one_model_whichever_process_serves_it(
    pg_dsn, gateway_factory, tmp_path
) -> None:
    """A session's vectors must come from one model (two models' vectors do not compare):
    each process draws its own first choice, the fleet's session map keeps the session on
    the model that answered it first."""
    embedders = {"a": {"supports": ["embeddings"]}, "b": {"supports": ["embeddings"]}}
    with shared_sim({"a": {}, "b": {}}) as sim:
        route = {
            "targets": ["a", "b"],
            "policy": "weighted",
            "weights": {"a": 1, "b": 1},
            "consistency": {"mode": "session"},
            "mixed_vectors": True,
        }
        config = _sim_config(sim, embedders, route)
        cluster = Cluster(gateway_factory, tmp_path, pg_dsn, config).start()
        served: dict[str, set[str]] = {}
        for n in range(12):
            session = f"indexing-{n}"
            for step in range(6):  # round-robin: every step on another process
                raw = cluster.client(n + step).embeddings.with_raw_response.create(
                    model="chat",
                    input=f"chunk {step}",
                    extra_headers={"x-turnout-session": session},
                )
                served.setdefault(session, set()).add(raw.headers["x-turnout-model"])
    assert all(len(models) == 1 for models in served.values()), served
    assert set().union(*served.values()) == {"a", "b"}  # the draw did differ between sessions


# --- one soft alert ---------------------------------------------------------------------------


def _soft_alerts(cluster: Cluster, admin: str) -> list[dict[str, Any]]:
    return [
        event
        for i in range(len(cluster.gateways))
        for event in cluster.events(i, admin)
        if event["type"] == "budget_soft_limit"
    ]


def test_a_budget_soft_alert_is_raised_once_by_the_fleet(pg_dsn, gateway_factory, tmp_path) -> None:
    with shared_sim({"m": {"reply": "a short answer", "tokens_per_second": 2000}}) as sim:
        config = _sim_config(sim, {"m": {"price": PRICE}}, {"targets": ["m"]})
        config["auth"] = {"required": True}
        # no process alone spends half of it: a third each, when the fleet is refused
        config["budgets"] = [{"scope": "route", "name": "chat", "daily_usd": 0.10, "soft": 0.5}]
        cluster = Cluster(gateway_factory, tmp_path, pg_dsn, config)
        key, admin = cluster.key("spender"), cluster.key("ops", "--admin")
        cluster.start()
        statuses: Counter[str] = Counter()
        for i in range(200):  # round-robin until the budget refuses on every process
            status, what, _ = _ask(cluster.client(i, key), max_tokens=16)
            statuses[f"{status} {what}"] += 1
            if statuses["429 budget_exceeded"] == 3:
                break
        assert statuses["429 budget_exceeded"] == 3, statuses
        deadline = time.monotonic() + 10  # the settlements are written off the request path
        while not _soft_alerts(cluster, admin) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # and any second alert would have been raised by now
        alerts = _soft_alerts(cluster, admin)
    assert len(alerts) == 1, alerts  # once for the fleet, not once (or never) per process
    [alert] = alerts
    assert (alert["scope"], alert["name"], alert["period"]) == ("route", "chat", "daily")
    assert 0.05 <= alert["spent_usd"] < 0.10 and alert["limit_usd"] == 0.10, alert
