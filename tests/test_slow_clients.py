"""Slow clients cannot hold the gateway's connections: headers must arrive within
`server.header_timeout`, a body may pause at most `server.body_timeout` between reads (408),
and one address holds at most `server.max_connections_per_client` connections. Raw sockets
against a real gateway process; normal clients are served meanwhile."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.conftest import ask, sim_config

BODY = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture
def gateway(gateway_factory):
    config = sim_config({"primary": {"reply": "fine"}}, {"chat": {"targets": ["primary"]}})
    config["server"] = {
        "header_timeout": "1s",
        "body_timeout": "1s",
        "max_connections_per_client": 4,
    }
    return gateway_factory(config)


def _connect(gateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    return sock


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes this connection within `within` seconds (EOF or reset)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def _trickle_until_closed(sock: socket.socket, data: bytes, every: float, limit: float) -> float:
    """Send `data` one byte every `every` seconds; seconds until the server cut us off."""
    started = time.monotonic()
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
        sock.settimeout(every)
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            break
    return float("inf")


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response read off a raw socket (Content-Length framed)."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def test_slowloris_headers_are_cut_off_and_others_are_served(gateway) -> None:
    headers = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
    first = _connect(gateway)  # the first request of a connection
    again = _connect(gateway)  # a keep-alive connection's next request
    again.sendall(
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    )  # one complete request, then a trickled one
    status, _, _ = _response(again)
    assert status == 200
    # while they trickle, normal clients are served
    assert ask(gateway)[0] == "fine"
    cut = _trickle_until_closed(first, headers, every=0.2, limit=15)
    cut_again = _trickle_until_closed(again, headers, every=0.2, limit=15)
    assert cut != float("inf"), "a client trickling its headers kept its connection"
    assert cut_again != float("inf"), "a keep-alive client trickling its next request kept it"
    assert ask(gateway)[0] == "fine"
    assert "Traceback" not in gateway.log()


def test_a_silent_connection_is_closed(gateway) -> None:
    sock = _connect(gateway)
    assert _closed_by_server(sock, within=15)


def test_slow_body_gets_a_408_in_openai_shape(gateway) -> None:
    sock = _connect(gateway)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000\r\n\r\n" + BODY[:20]
    )
    status, headers, body = _response(sock)  # nothing more is sent: the body stalls
    assert status == 408
    error = json.loads(body)["error"]
    assert error["type"] == "timeout_error"  # the OpenAI dialect's type for a 408
    assert error["code"] == "request_timeout"
    assert "body" in error["message"]
    assert headers.get("connection", "").lower() == "close"
    assert ask(gateway)[0] == "fine"


def test_slow_body_on_messages_gets_a_408_in_anthropic_shape(gateway) -> None:
    sock = _connect(gateway)
    sock.sendall(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000\r\n\r\n{"
    )
    status, _, body = _response(sock)
    assert status == 408
    answer = json.loads(body)
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"


def test_connections_per_address_are_capped(gateway) -> None:
    held = [_connect(gateway) for _ in range(4)]
    time.sleep(0.3)  # all four accepted
    extra = _connect(gateway)
    assert _closed_by_server(extra, within=5), "a fifth connection from one address was kept"
    for sock in held:  # the first four still work
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _response(sock)[0] == 200
    for sock in held:
        sock.close()
    deadline = time.monotonic() + 10
    while True:  # once they are gone, the address may connect again
        try:
            assert ask(gateway)[0] == "fine"
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
