"""Whole answers over turnout's own keep-alive client (providers/keepalive.py), which replaced
aiohttp's ClientSession on that path (issue 12). The gateway tests below go through a real
TLS upstream with the openai SDK; the client tests drive the client against raw TCP servers
that answer in the ways real upstreams do: chunked, gzip, interim 100s, `Connection: close`,
an HTTP/1.0 body that ends at the close, and the broken ones."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import yarl
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.upstreams import serve_app
from turnout.providers.keepalive import (
    MAX_ANSWER_BYTES,
    KeepAliveClient,
    MalformedAnswer,
    UpstreamClosed,
)

ANSWER = {
    "id": "chatcmpl-tls",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def gzipping_upstream(peers: set[Any]) -> web.Application:
    """Answers with a gzip-compressed body when asked for one, noting each connection."""

    async def handler(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        response = web.json_response(ANSWER)
        if "gzip" in request.headers.get("accept-encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


KEY = {"TLS_TEST_KEY": "sk-tls-test-secret"}


def tls_config(port: int) -> dict[str, Any]:
    return {
        "providers": {
            "up": {
                "kind": "openai",
                "base_url": f"https://127.0.0.1:{port}/v1",
                "api_key": "${TLS_TEST_KEY}",
            }
        },
        "models": {"m": {"provider": "up", "model": "m"}},
        "routes": {"chat": {"targets": ["m"]}},
    }


def test_answers_arrive_over_tls_on_one_kept_connection(gateway_factory, tmp_path):
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    peers: set[Any] = set()
    with serve_app(gzipping_upstream(peers), context) as port:
        gateway = gateway_factory(tls_config(port), env={"SSL_CERT_FILE": str(cert), **KEY})
        client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
        for _ in range(5):
            answer = client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hello"}]
            )
            assert answer.choices[0].message.content == "hi"
            assert answer.usage is not None and answer.usage.total_tokens == 4
    assert len(peers) == 1  # five answers, one TLS connection kept alive


def test_an_untrusted_certificate_is_refused(gateway_factory, tmp_path):
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with serve_app(gzipping_upstream(set()), context) as port:
        gateway = gateway_factory(tls_config(port), env=KEY)  # the system's CAs only
        client = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hello"}]
            )
        health = orjson.loads(gateway.get("/health/providers").body)
    assert refused.value.status_code == 503
    assert "CERTIFICATE_VERIFY_FAILED" in orjson.dumps(health).decode()


# --- the client against raw servers ---------------------------------------------------

Script = Callable[[int, int], bytes | None]  # (connection no., request no.) -> bytes to send


class RawUpstream:
    """A TCP server that reads each request whole and answers it with a script's bytes
    (None: close the connection without answering), closing the connection after the answer
    when it says `Connection: close` or HTTP/1.0, or with `close_after`. Counts connections."""

    def __init__(self, script: Script, close_after: bool = False) -> None:
        self.script = script
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> yarl.URL:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return yarl.URL(f"http://127.0.0.1:{port}/v1/chat/completions?x=1")

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.hang_up()
        self.server.close()

    def hang_up(self) -> None:
        """Closes every open connection from the server's side (an idle timeout, say)."""
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        number, count = self.connections, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                count += 1
                answer = self.script(number, count)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after or b"Connection: close" in answer or b"HTTP/1.0" in answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


GZIPPED = b"Content-Encoding: gzip\r\n"
# 64 KiB that inflate past the answer bound (64 MiB): refused, not inflated
BOMB = gzip.compress(b"\0" * (MAX_ANSWER_BYTES + 1), compresslevel=1)


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@pytest.fixture
async def client() -> AsyncIterator[KeepAliveClient]:
    kept = KeepAliveClient({"content-type": "application/json", "authorization": "Bearer k"})
    yield kept
    kept.close()


async def test_one_connection_serves_many_answers(client):
    upstream = RawUpstream(lambda _c, n: ok(b'{"n":%d}' % n, b"X-Ratelimit-Remaining: 9\r\n"))
    async with upstream as url:
        for n in range(1, 4):
            answer = await client.post(url, b"{}", 5)
            assert (answer.status, answer.body) == (200, b'{"n":%d}' % n)
            assert answer.headers["x-ratelimit-remaining"] == "9"  # any case
    assert upstream.connections == 1
    sent = upstream.requests[0]
    assert sent.startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\n")
    assert b"Host: 127.0.0.1:" in sent and b"authorization: Bearer k\r\n" in sent
    assert b"user-agent" not in sent.lower()
    assert sent.endswith(b"\r\n\r\n{}")


async def test_chunked_gzip_and_deflate_bodies_are_decoded(client):
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n"
    )
    zipped = ok(gzip.compress(b"zipped"), b"Content-Encoding: gzip\r\n")
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # deflate without zlib's wrapper
    deflated = ok(raw.compress(b"deflated") + raw.flush(), b"Content-Encoding: deflate\r\n")
    answers = {1: chunked, 2: zipped, 3: deflated}
    async with RawUpstream(lambda _c, n: answers[n]) as url:
        bodies = [(await client.post(url, b"{}", 5)).body for _ in range(3)]
    assert bodies == [b"abcdef", b"zipped", b"deflated"]


async def test_an_interim_100_is_skipped(client):
    answer = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"real")
    async with RawUpstream(lambda _c, _n: answer) as url:
        assert (await client.post(url, b"{}", 5)).body == b"real"


async def test_connection_close_and_http10_bodies_end_the_connection(client):
    answers = {
        1: ok(b"closing", b"Connection: close\r\n"),
        2: b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\nuntil the close",
        3: ok(b"third"),
    }
    upstream = RawUpstream(lambda c, _n: answers[c])
    async with upstream as url:
        bodies = [(await client.post(url, b"{}", 5)).body for _ in range(3)]
    assert bodies == [b"closing", b"until the close", b"third"]
    assert upstream.connections == 3


async def test_an_idle_connection_the_upstream_closed_is_not_reused(client):
    upstream = RawUpstream(lambda _c, n: ok(b"%d" % n))
    async with upstream as url:
        assert (await client.post(url, b"{}", 5)).body == b"1"
        upstream.hang_up()  # its idle timeout (uvicorn: 5 s, nginx: 75 s)
        await asyncio.sleep(0.05)
        assert (await client.post(url, b"{}", 5)).body == b"1"  # on a new connection
    assert upstream.connections == 2


@pytest.mark.parametrize(
    ("answer", "error", "says"),
    [
        (None, UpstreamClosed, "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", UpstreamClosed, "closed"),
        (b"SMTP ready\r\n\r\n", MalformedAnswer, "malformed"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", MalformedAnswer, "malformed"),
        (ok(b"not gzip", b"Content-Encoding: gzip\r\n"), MalformedAnswer, "cannot decode"),
        (ok(gzip.compress(b"x" * 100)[:-12], GZIPPED), MalformedAnswer, "truncated"),
        (ok(BOMB, GZIPPED), MalformedAnswer, "bytes once decoded"),
    ],
    ids=["no answer", "cut mid-body", "not http", "huge headers", "bad gzip", "cut gzip", "bomb"],
)
async def test_a_broken_answer_is_a_connection_error(client, answer, error, says):
    upstream = RawUpstream(lambda c, _n: answer if c == 1 else ok(b"fine"), close_after=True)
    async with upstream as url:
        with pytest.raises(error, match=says):
            await client.post(url, b"{}", 5)
        assert (await client.post(url, b"{}", 5)).body == b"fine"  # on a new connection
    assert upstream.connections == 2


async def test_an_answer_cut_short_by_a_deadline_leaves_no_connection_behind(client):
    def script(c: int, _n: int) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf" if c == 1 else ok(b"fresh")

    upstream = RawUpstream(script)
    async with upstream as url:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await client.post(url, b"{}", 5)
        assert (await client.post(url, b"{}", 5)).body == b"fresh"
    assert upstream.connections == 2  # the half-read connection was dropped, not reused


async def test_a_connect_that_hangs_times_out():
    # a listener whose accept queue is full: Linux drops further SYNs, so a connect hangs
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    kept = KeepAliveClient({})
    try:
        with pytest.raises(TimeoutError):
            await kept.post(yarl.URL(f"http://127.0.0.1:{port}/v1"), b"{}", 0.3)
    finally:
        kept.close()
        for sock in [listener, *fillers]:
            sock.close()


def test_a_header_with_a_line_break_is_refused():
    with pytest.raises(ValueError, match="line break"):
        KeepAliveClient({"x-tag": "a\r\nx-injected: 1"})
