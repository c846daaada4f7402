"""The single-process recorder keeps plain Python numbers and builds the families when scraped
(metrics/tallies.py); the exposition must be the text prometheus_client's own Histogram,
Counter and Gauge give for the same requests (what `--workers N` still uses: ChildRecorder).
Both recorders get the same few thousand varied ledger rows (answered or not, streamed or
not, fallbacks with every kind of reason, made-up routes, values on and beyond the bucket
bounds, several providers and outcomes sharing a child) and the two scrapes are compared
byte for byte. The end-to-end scrapes over a real gateway are in test_metrics.py."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, generate_latest

from tests.conftest import sim_config
from turnout.accounting.records import LedgerRow
from turnout.config.schema import Config
from turnout.events import RequestFinished
from turnout.metrics.names import DURATION_BUCKETS, TOKEN_BUCKETS, TTFT_BUCKETS
from turnout.metrics.recorder import ChildRecorder, Instruments, TallyRecorder

CONFIG = Config.model_validate(
    sim_config(
        {"a": {}, "b": {}, "c": {}}, {"chat": {"targets": ["a", "b"]}, "code": {"targets": ["c"]}}
    )
)
REASONS = ["server_error(502)", "open(41.2s)", "rate_limited", "made-up reason", None, "timeout"]


def _rows(seed: int, count: int) -> list[LedgerRow]:
    pick = random.Random(seed)
    # values exactly on a bound land in that bucket (le is "less or equal"): test them too
    tokens = [0, 1, 5, 70_000_000, *TOKEN_BUCKETS]
    seconds = [0.0, 0.001, 200.0, *DURATION_BUCKETS, *TTFT_BUCKETS]
    rows = []
    for _ in range(count):
        model = pick.choice(["a", "b", "c", None, "not-configured"])
        route = pick.choice(["chat", "code", "made-up", "a", ""])
        outcome = pick.choice(["ok", "ok", "error", "stream_failed", "client_closed"])
        row = LedgerRow("id", 0.0, route, "openai", False, 200, outcome, model=model)
        row.provider = pick.choice(["sim", "other", None]) if model else None
        row.attempts = [
            {"model": pick.choice(["a", "b", "unknown-model"]), "reason": pick.choice(REASONS)}
            for _ in range(pick.choice([0, 0, 1, 2]))
        ]
        row.prompt_tokens = pick.choice([*tokens, pick.randint(0, 5000)])
        row.completion_tokens = pick.choice([*tokens, pick.randint(0, 5000)])
        row.cost_usd = pick.random() / 1000
        row.baseline_cost_usd = pick.random() / 1000
        row.ttft_ms = pick.choice([None, pick.random() * 3000, *(s * 1000 for s in seconds)])
        row.latency_ms = pick.choice([pick.random() * 100_000, *(s * 1000 for s in seconds)])
        rows.append(row)
    return rows


def _scrapes(rows: list[LedgerRow]) -> tuple[str, str]:
    """(prometheus_client's metrics' text, the tallies' text) after the same requests."""
    library = CollectorRegistry(auto_describe=True)
    reference = ChildRecorder(Instruments(library), lambda: CONFIG)
    plain = CollectorRegistry(auto_describe=True)
    tallies = TallyRecorder(lambda: CONFIG)
    plain.register(tallies.tallies)
    for row in rows:
        reference.on_request(RequestFinished(row))
        tallies.on_request(RequestFinished(row))
    return generate_latest(library).decode(), generate_latest(plain).decode()


def test_the_tallies_scrape_as_prometheus_clients_metrics_do() -> None:
    for seed in (1, 2, 3):
        expected, got = _scrapes(_rows(seed, 3000))
        assert "turnout_fallbacks_total{" in expected and 'le="+Inf"' in expected
        assert got == expected


def test_before_any_request_the_families_are_there_without_samples() -> None:
    expected, got = _scrapes([])
    assert got == expected
    assert "# TYPE gen_ai_client_token_usage histogram" in got and "{" not in got
