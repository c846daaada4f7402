"""The server's edges: undecodable credentials and bodies are the client's fault (4xx in its
dialect's shape, never a 500); client hang-ups are normal (no traceback); a dead route's
503 always says when to come back; an address guessing keys is slowed down."""

from __future__ import annotations

import gzip
import json
import socket
import struct
import time
import zlib

import anthropic
import openai
import pytest
import yaml

from tests.conftest import ask, free_port, sdk_client, sim_config, turnout_cli

MESSAGES = [{"role": "user", "content": "hi"}]
BODY = json.dumps({"model": "chat", "messages": MESSAGES}).encode()
ANTHROPIC_BODY = json.dumps({"model": "chat", "max_tokens": 50, "messages": MESSAGES}).encode()
ROUTES = {"chat": {"targets": ["primary"]}}


def _raw(gateway, path: str, body: bytes, headers: bytes = b"") -> tuple[int, dict, bytes]:
    """One request written byte for byte (what no SDK sends); the whole response."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
        + headers
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), fields, payload


def _openai_error(payload: bytes) -> dict:
    body = json.loads(payload)
    assert set(body) == {"error"}, body
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]


def _anthropic_error(payload: bytes) -> dict:
    body = json.loads(payload)
    assert body["type"] == "error", body
    assert set(body["error"]) >= {"type", "message"}
    return body["error"]


@pytest.fixture
def gateway(gateway_factory):
    return gateway_factory(sim_config({"primary": {"reply": "fine"}}, ROUTES))


def _create_key(config: dict, tmp_path, name: str) -> str:
    path = tmp_path / f"keys-{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    result = turnout_cli(
        "keys",
        "--config",
        str(path),
        "create",
        name,
        env={"TURNOUT_DATA_DIR": str(tmp_path)},
        check=True,
    )
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    return lines["key"].strip()


@pytest.fixture
def authed(gateway_factory, tmp_path):
    """A gateway with authentication on, and one valid key."""
    config = sim_config({"primary": {"reply": "fine"}}, ROUTES)
    config["auth"] = {"required": True}
    key = _create_key(config, tmp_path, "app")
    return gateway_factory(config), key


# --- undecodable credentials -------------------------------------------------------------


def test_a_non_utf8_api_key_is_a_401_in_each_dialect(authed) -> None:
    gateway, key = authed
    status, _, payload = _raw(
        gateway, "/v1/chat/completions", BODY, b"Authorization: Bearer \xff\xfe\xfdkey\r\n"
    )
    assert status == 401
    assert _openai_error(payload)["type"] == "authentication_error"
    status, _, payload = _raw(gateway, "/v1/messages", ANTHROPIC_BODY, b"x-api-key: \xff\xfe\r\n")
    assert status == 401
    assert _anthropic_error(payload)["type"] == "authentication_error"
    answer = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    assert answer.chat.completions.create(model="chat", messages=MESSAGES).choices
    assert "Traceback" not in gateway.log()


def test_a_non_utf8_api_key_is_ignored_when_auth_is_off(gateway) -> None:
    status, _, _ = _raw(
        gateway, "/v1/chat/completions", BODY, b"Authorization: Bearer \xff\xfe\xfdkey\r\n"
    )
    assert status == 200  # auth is off (loopback): the key means nothing, as any other


# --- undecodable bodies --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        (b"gzip", b"this is not gzip at all"),
        (b"gzip", gzip.compress(BODY)[:25]),  # truncated
        (b"deflate", b"\x00\x01garbage"),
    ],
    ids=["garbage-gzip", "truncated-gzip", "garbage-deflate"],
)
def test_a_corrupt_compressed_body_is_a_400(gateway, encoding: bytes, body: bytes) -> None:
    headers = b"Content-Encoding: " + encoding + b"\r\n"
    status, _, payload = _raw(gateway, "/v1/chat/completions", body, headers)
    assert status == 400
    error = _openai_error(payload)
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("the request body could not be decoded")
    status, _, payload = _raw(gateway, "/v1/messages", body, headers)
    assert status == 400
    assert _anthropic_error(payload)["type"] == "invalid_request_error"
    assert ask(gateway)[0] == "fine"
    assert "Traceback" not in gateway.log()


@pytest.mark.parametrize("encoding", [b"zork", b"br", b"zstd", b"gzip, zork"])
def test_an_unsupported_content_encoding_is_a_415(gateway, encoding: bytes) -> None:
    headers = b"Content-Encoding: " + encoding + b"\r\n"
    status, _, payload = _raw(gateway, "/v1/chat/completions", BODY, headers)
    assert status == 415
    error = _openai_error(payload)
    assert "content-encoding" in error["message"].lower()
    status, _, payload = _raw(gateway, "/v1/messages", ANTHROPIC_BODY, headers)
    assert status == 415
    _anthropic_error(payload)
    assert "Traceback" not in gateway.log()


def test_compressed_bodies_still_work(gateway) -> None:
    for encoding, body in ((b"gzip", gzip.compress(BODY)), (b"deflate", zlib.compress(BODY))):
        status, _, payload = _raw(
            gateway, "/v1/chat/completions", body, b"Content-Encoding: " + encoding + b"\r\n"
        )
        assert status == 200, payload
        assert json.loads(payload)["choices"][0]["message"]["content"] == "fine"


def test_a_compressed_body_is_capped_once_inflated(gateway) -> None:
    bomb = gzip.compress(b" " * (33 * 1024 * 1024))  # ~33 KB on the wire, 33 MB inflated
    status, _, payload = _raw(gateway, "/v1/chat/completions", bomb, b"Content-Encoding: gzip\r\n")
    assert status == 413
    _openai_error(payload)


def test_malformed_http_is_a_400_in_openai_shape_without_a_traceback(gateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400"
    _openai_error(payload)
    assert ask(gateway)[0] == "fine"
    assert "Traceback" not in gateway.log()


def test_a_header_aiohttp_cannot_parse_is_a_400_in_the_paths_own_shape(gateway) -> None:
    # a control byte in a header value: refused by the HTTP parser, before any handler
    nul = b"X-Turnout-Session: a\x00b\r\n"
    status, _, payload = _raw(gateway, "/v1/messages", ANTHROPIC_BODY, nul)
    assert status == 400
    assert "malformed HTTP request" in _anthropic_error(payload)["message"]
    status, _, payload = _raw(gateway, "/v1/chat/completions", BODY, nul)
    assert status == 400
    _openai_error(payload)
    assert "Traceback" not in gateway.log()


# --- client hang-ups -----------------------------------------------------------------------


def test_client_hangups_log_no_traceback(gateway_factory) -> None:
    config = sim_config(
        {"slow": {"reply": "word " * 300, "tokens_per_second": 100}, "late": {"ttft": "1s"}},
        {"chat": {"targets": ["slow"]}, "later": {"targets": ["late"]}},
    )
    gateway = gateway_factory(config)
    stream = json.dumps({"model": "chat", "stream": True, "messages": MESSAGES}).encode()
    late = json.dumps({"model": "later", "messages": MESSAGES}).encode()
    requests = [
        ("/v1/chat/completions", stream, 0),  # mid-stream
        ("/v1/messages", json.dumps({**json.loads(ANTHROPIC_BODY), "stream": True}).encode(), 0),
        ("/v1/chat/completions", late, 0),  # waiting for the upstream
        ("/v1/chat/completions", BODY, 10),  # mid-body: Content-Length says 10 bytes more
        ("/v1/messages", ANTHROPIC_BODY, 10),
    ]
    sockets = []
    for index in range(20):
        path, body, missing = requests[index % len(requests)]
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) + missing}\r\n\r\n".encode()
            + body
        )
        if index % 2:  # half hang up with a reset, half with a clean close
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sockets.append(sock)
    time.sleep(0.5)  # streams are under way, the rest waiting
    for sock in sockets:
        sock.close()
    time.sleep(2)  # the late upstream answers to nobody
    assert ask(gateway)[0]
    assert gateway.get("/health").status == 200
    assert "Traceback" not in gateway.log()


# --- Retry-After on a dead route ------------------------------------------------------------


def test_the_first_503_of_a_dead_route_has_retry_after(gateway_factory) -> None:
    config = {
        "providers": {"dead": {"kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1"}},
        "models": {"gone": {"provider": "dead", "model": "gone"}},
        "routes": {"chat": {"targets": ["gone"]}},
    }
    gateway = gateway_factory(config)
    with pytest.raises(openai.APIStatusError) as failed:
        sdk_client(gateway).chat.completions.create(model="chat", messages=MESSAGES)
    assert failed.value.status_code == 503
    assert failed.value.code == "all_targets_unavailable"
    assert int(failed.value.response.headers["retry-after"]) >= 1


# --- repeated bad keys ---------------------------------------------------------------------


def test_an_address_guessing_keys_is_blocked_for_a_while(authed) -> None:
    gateway, key = authed
    guesser = openai.OpenAI(base_url=gateway.base_url, api_key="tk-guess", max_retries=0)
    for _ in range(10):
        with pytest.raises(openai.AuthenticationError):
            guesser.chat.completions.create(model="chat", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as blocked:
        guesser.chat.completions.create(model="chat", messages=MESSAGES)
    assert blocked.value.code == "too_many_failed_authentications"
    assert 1 <= int(blocked.value.response.headers["retry-after"]) <= 60
    # while blocked, the address is refused whatever key it sends: a right guess would
    # otherwise show as the one answer that is not a 429
    good = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        good.chat.completions.create(model="chat", messages=MESSAGES)
    with pytest.raises(anthropic.RateLimitError) as anthropic_blocked:
        anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0).messages.create(
            model="chat", max_tokens=50, messages=MESSAGES
        )
    assert anthropic_blocked.value.response.headers["retry-after"]
    models = gateway.get("/v1/models")  # every endpoint that checks keys
    assert models.status == 429
    assert {k.lower(): v for k, v in models.headers.items()}["retry-after"]
    assert gateway.get("/health").status == 200  # liveness needs no key


def test_the_failure_limiter_counts_per_address_in_a_window() -> None:
    from turnout.accounting.limits import FailureLimiter

    limiter = FailureLimiter(max_failures=3, window=60.0, max_addresses=2)
    for t in (0.0, 1.0, 2.0):
        assert limiter.blocked_for("a", t) is None
        limiter.failed("a", t)
    assert limiter.blocked_for("a", 3.0) == pytest.approx(57.0)
    assert limiter.blocked_for("b", 3.0) is None  # one address's failures are not another's
    assert limiter.blocked_for("a", 60.5) is None  # the oldest failure left the window
    limiter.failed("b", 4.0)
    limiter.failed("c", 5.0)  # a third address: the least recently seen one is forgotten
    assert len(limiter) == 2
