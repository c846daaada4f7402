"""Time to first token is measured once, where the executor receives the first token: the
ledger, the report and /health/providers all show that figure, and it is the wait the
client itself measured."""

from __future__ import annotations

import json
import statistics
import time

from tests.conftest import ledger_rows, sdk_client, sim_config, turnout_cli

FIRST_TOKEN_AFTER = 0.4  # seconds the simulated model takes to its first token
CLOSE_ENOUGH_MS = 20


def _streamed_ttfts(client, requests: int) -> dict[str, float]:
    """request id -> the milliseconds the openai SDK waited for the first content chunk."""
    seen: dict[str, float] = {}
    for _ in range(requests):
        started = time.perf_counter()
        with client.chat.completions.with_streaming_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        ) as response:
            first = None
            for chunk in response.parse():
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = (time.perf_counter() - started) * 1000
            assert first is not None
            seen[response.headers["x-turnout-request-id"]] = first
    return seen


def test_ledger_report_and_health_show_the_ttft_the_client_saw(gateway_factory, tmp_path) -> None:
    config = sim_config({"slow": {"ttft": FIRST_TOKEN_AFTER}}, {"chat": {"targets": ["slow"]}})
    gateway = gateway_factory(config)
    client = sdk_client(gateway)
    _streamed_ttfts(client, 1)  # the client's first request also pays for its connection
    client_ms = _streamed_ttfts(client, 5)
    assert all(ms >= FIRST_TOKEN_AFTER * 1000 for ms in client_ms.values()), client_ms

    health = gateway.get("/health/providers").json()
    slow = next(t for t in health["routes"]["chat"]["targets"] if t["model"] == "slow")
    median_client = statistics.median(client_ms.values())
    assert abs(slow["ttft_p50_ms"] - median_client) < CLOSE_ENOUGH_MS, (slow, client_ms)

    gateway.stop()  # the ledger is drained on exit
    rows = {row.id: row for row in ledger_rows("sqlite", str(tmp_path / "turnout.db"))}
    for request_id, seen in client_ms.items():
        ledgered = rows[request_id].ttft_ms
        assert ledgered is not None and abs(ledgered - seen) < CLOSE_ENOUGH_MS, (ledgered, seen)

    report = turnout_cli(
        "report", "--format", "json", env={"TURNOUT_DATA_DIR": str(tmp_path)}, check=True
    )
    text = report.stdout
    figures = [v for k, v in _walk(json.loads(text)) if k == "ttft_p50_ms" and v is not None]
    assert figures and all(abs(v - median_client) < CLOSE_ENOUGH_MS for v in figures), text


def _walk(value):
    """Every (key, value) pair anywhere in a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)
