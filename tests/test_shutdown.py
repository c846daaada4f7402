"""Shutdown and signals, on a real gateway process: SIGTERM drains for the configured grace,
then ends what is still open in the client's own dialect (an error event, a 503) with a
`shutdown` ledger row; a client that hangs up before the first byte is `client_closed`
(499); SIGHUP is survived until hot reload exists."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import GatewayProcess, ledger_rows, sdk_client, sim_config

MESSAGES = [{"role": "user", "content": "hello"}]
LONG_REPLY = " ".join(f"word{i}" for i in range(400))


def _config(tmp_path: Path, behaviour: dict[str, Any], grace: str = "1s") -> dict[str, Any]:
    config = sim_config({"slow": behaviour}, {"chat": {"targets": ["slow"]}})
    config["server"] = {"shutdown_grace": grace}
    config["ledger"] = {"backend": "sqlite", "path": str(tmp_path / "ledger.db")}
    return config


def run_in_thread(work) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `work(result)`; it stores what happened in `result` (error, chunks)."""
    result: dict[str, Any] = {"chunks": 0, "started": threading.Event()}

    def target() -> None:
        try:
            work(result)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            result["error"] = exc
        finally:
            result["started"].set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def terminate_and_wait(gateway: GatewayProcess, within: float) -> float:
    began = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    gateway.process.wait(timeout=within)
    return time.monotonic() - began


def test_sigterm_ends_open_streams_with_an_error_event_in_each_dialect(
    gateway_factory, tmp_path: Path
) -> None:
    gateway = gateway_factory(_config(tmp_path, {"reply": LONG_REPLY, "tokens_per_second": 10}))

    def openai_stream(result: dict[str, Any]) -> None:
        stream = sdk_client(gateway).chat.completions.create(
            model="chat", messages=MESSAGES, stream=True
        )
        for _ in stream:
            result["chunks"] += 1
            result["started"].set()

    def anthropic_stream(result: dict[str, Any]) -> None:
        client = anthropic.Anthropic(
            base_url=gateway.url, api_key="unused", max_retries=0, timeout=30
        )
        with client.messages.stream(model="chat", max_tokens=1024, messages=MESSAGES) as stream:
            for _ in stream.text_stream:
                result["chunks"] += 1
                result["started"].set()

    streams = [run_in_thread(openai_stream), run_in_thread(anthropic_stream)]
    for _, result in streams:
        assert result["started"].wait(20)
        assert result["chunks"] > 0, result.get("error")
    took = terminate_and_wait(gateway, within=15)
    for thread, _ in streams:
        thread.join(10)
    (_, from_openai), (_, from_anthropic) = streams

    # an API error from each SDK, not a broken connection or an incomplete read
    assert isinstance(from_openai.get("error"), openai.APIError), repr(from_openai.get("error"))
    assert not isinstance(from_openai["error"], openai.APIConnectionError)
    assert "shutting down" in str(from_openai["error"])
    assert isinstance(from_anthropic.get("error"), anthropic.APIStatusError), repr(
        from_anthropic.get("error")
    )
    assert from_anthropic["error"].body["error"]["type"] == "overloaded_error"
    assert gateway.process.returncode == 0, gateway.log()
    assert took < 1 + 8, took  # grace + a few seconds

    rows = ledger_rows("sqlite", str(tmp_path / "ledger.db"))
    assert sorted(r.dialect for r in rows) == ["anthropic", "openai"]
    assert all(r.outcome == "shutdown" and r.status == 200 and r.stream for r in rows), rows
    assert all(r.completion_tokens > 0 for r in rows)


def test_a_request_with_nothing_sent_at_the_end_of_the_grace_gets_a_503(
    gateway_factory, tmp_path: Path
) -> None:
    gateway = gateway_factory(_config(tmp_path, {"ttft": "60s"}))

    def non_streaming(result: dict[str, Any]) -> None:
        result["started"].set()
        sdk_client(gateway).chat.completions.create(model="chat", messages=MESSAGES)

    def streaming_before_first_token(result: dict[str, Any]) -> None:
        client = anthropic.Anthropic(
            base_url=gateway.url, api_key="unused", max_retries=0, timeout=30
        )
        with client.messages.stream(model="chat", max_tokens=64, messages=MESSAGES) as stream:
            result["started"].set()
            for _ in stream.text_stream:
                pass

    requests = [run_in_thread(non_streaming), run_in_thread(streaming_before_first_token)]
    time.sleep(1.0)  # both are waiting on the upstream
    terminate_and_wait(gateway, within=15)
    for thread, _ in requests:
        thread.join(10)
    (_, plain), (_, early_stream) = requests
    assert isinstance(plain.get("error"), openai.InternalServerError), repr(plain.get("error"))
    assert plain["error"].status_code == 503
    assert "shutting down" in plain["error"].message
    assert isinstance(early_stream.get("error"), anthropic.APIStatusError)
    assert early_stream["error"].status_code == 503
    assert gateway.process.returncode == 0, gateway.log()
    rows = ledger_rows("sqlite", str(tmp_path / "ledger.db"))
    assert len(rows) == 2
    assert all(r.outcome == "shutdown" and r.status == 503 for r in rows), rows


def test_requests_shorter_than_the_grace_finish_normally(gateway_factory, tmp_path: Path) -> None:
    gateway = gateway_factory(
        _config(tmp_path, {"reply": "one two three four", "ttft": "500ms"}, grace="10s")
    )

    def ask(result: dict[str, Any]) -> None:
        result["started"].set()
        answer = sdk_client(gateway).chat.completions.create(model="chat", messages=MESSAGES)
        result["text"] = answer.choices[0].message.content

    thread, result = run_in_thread(ask)
    time.sleep(0.2)
    terminate_and_wait(gateway, within=15)
    thread.join(10)
    assert result.get("text") == "one two three four", result.get("error")
    rows = ledger_rows("sqlite", str(tmp_path / "ledger.db"))
    assert [(r.status, r.outcome) for r in rows] == [(200, "ok")]


@pytest.mark.parametrize("stream", [False, True])
def test_a_hang_up_before_the_first_byte_is_client_closed(
    gateway_factory, tmp_path: Path, stream: bool
) -> None:
    gateway = gateway_factory(_config(tmp_path, {"ttft": "1500ms"}))
    body = json.dumps({"model": "chat", "messages": MESSAGES, "stream": stream}).encode()
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        time.sleep(0.3)
    time.sleep(2.5)  # the upstream answers after the client left
    assert gateway.get("/health").status == 200
    gateway.stop()
    rows = ledger_rows("sqlite", str(tmp_path / "ledger.db"))
    assert [(r.status, r.outcome) for r in rows] == [(499, "client_closed")]


def test_sighup_reloads_and_the_gateway_keeps_serving(gateway_factory, tmp_path: Path) -> None:
    """SIGHUP's default action would kill the process: it reloads the config instead (an
    unchanged one here; tests/test_reload.py covers real changes)."""
    gateway = gateway_factory(_config(tmp_path, {"reply": "still here"}))
    gateway.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "config reload from" not in gateway.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.process.poll() is None, gateway.log()
    answer = sdk_client(gateway).chat.completions.create(model="chat", messages=MESSAGES)
    assert answer.choices[0].message.content == "still here"
    reloads = [line for line in gateway.log().splitlines() if "config reload from" in line]
    assert len(reloads) == 1 and "unchanged" in reloads[0], gateway.log()
