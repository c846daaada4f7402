"""Whole upstream answers over pooled keep-alive HTTP/1.1 connections, parsed by httptools
(llhttp, Node's parser, as uvicorn uses it).

Why not aiohttp's ClientSession, as streams and embeddings use: on the bench it is more than
half of a minimal proxy's CPU per request (the floor proxy served 2.3x the requests/s with
this client in its place, bench/RESULTS.md issue 12). A whole answer needs one POST written
in one piece and one response read to its end: a pool, a parser, a future. Kept from aiohttp:
keep-alive with a 60 s idle limit, `Connection: close` honoured, chunked and gzip/deflate
bodies, TLS with the system's CAs (`SSL_CERT_FILE` applies), no proxy from the environment,
no User-Agent. The read deadline is the caller's (the scheduler's); the connect one is here.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import httptools
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from turnout import clock
from turnout.dialects.content_coding import CODINGS, codings_of, decoded

KEEPALIVE = 60.0  # seconds an idle connection is reused for (aiohttp's keepalive_timeout)
MAX_HEADER_BYTES = 64 * 1024  # an upstream's status line and headers, together
# an answer's body once its gzip is undone: a long chat answer is a few MB; past this it is a
# decompression bomb, not an answer
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection before its answer was whole."""


class MalformedAnswer(ConnectionError):
    """What the upstream sent is not an HTTP/1.1 answer we can read."""


@dataclass(slots=True)
class WholeAnswer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    headers_at: float  # turnout.clock time the headers arrived (rate-limit resets count from it)


def encoded_headers(headers: Mapping[str, str]) -> bytes:
    """Header lines sent with every request, encoded once. A line break in a name or value
    would end the header early and let the rest be read as another header or request."""
    lines = []
    for name, value in headers.items():
        if any(c in name or c in value for c in "\r\n\0") or ":" in name:
            raise ValueError(f"upstream header {name!r} holds a line break or a colon")
        lines.append(f"{name}: {value}\r\n".encode())
    return b"".join(lines)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer read whole."""

    def __init__(self, pool: _HostPool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[WholeAnswer] | None = None
        self._reset()

    def _reset(self) -> None:
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._headers_at = 0.0
        self._status = 0
        self._length_known = False  # Content-Length or chunked: else the body ends at close

    def send(self, data: bytes, waiter: asyncio.Future[WholeAnswer]) -> None:
        assert self.transport is not None
        self._waiter = waiter
        self._reset()
        if self.closed or self.transport.is_closing():  # the upstream hung up as it was taken
            self._fail(UpstreamClosed("the upstream closed the connection"))
            return
        self.transport.write(data)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._status and not self._length_known:  # HTTP/1.0 style: the close ends the body
            self.on_message_complete()
            return
        reason = f": {exc}" if exc else ""
        self._fail(UpstreamClosed(f"the upstream closed the connection{reason}"))

    def eof_received(self) -> None:
        self.closed = True  # not to be reused; what was read still completes in connection_lost

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the connection is out of step
            self.abort()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(MalformedAnswer(f"malformed HTTP answer: {exc}"))
            self.abort()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_HEADER_BYTES:
            raise MalformedAnswer(f"headers longer than {MAX_HEADER_BYTES} bytes")
        key = name.decode("latin-1")
        if key.lower() in ("content-length", "transfer-encoding"):
            self._length_known = True
        self._headers.append((key, value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_at = clock.now()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer (100 Continue): the real one follows
            self._reset()
            return
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            self.abort()
            return
        headers = CIMultiDictProxy(CIMultiDict(self._headers))
        try:
            body = _decoded(b"".join(self._body), headers.get("content-encoding"))
        except ValueError as exc:  # CodingError, InflatedTooLarge
            waiter.set_exception(MalformedAnswer(f"cannot decode the answer's body: {exc}"))
            self.abort()
            return
        waiter.set_result(WholeAnswer(self._status, headers, body, self._headers_at))
        self._body = []
        if self.closed or not self._parser.should_keep_alive():
            self.abort()
        else:
            self._pool.put_back(self)

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


def _decoded(body: bytes, encoding: str | None) -> bytes:
    """The body with its content codings undone; one we did not ask for (br, say) leaves it
    as it came, for the dialect to refuse."""
    codings = codings_of(encoding)
    if not codings or any(c not in CODINGS for c in codings):
        return body
    return decoded(body, codings, MAX_ANSWER_BYTES)


class _HostPool:
    """The idle connections to one scheme://host:port, most recently used first."""

    def __init__(self, url: yarl.URL, ssl_context: ssl.SSLContext | None) -> None:
        self.host = url.raw_host or ""
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = ssl_context
        self.host_header = f"Host: {url.host_port_subcomponent}\r\n".encode()
        self._idle: list[_Connection] = []
        self._closed = False

    def put_back(self, connection: _Connection) -> None:
        if self._closed:  # an answer that finished after its provider was retired
            connection.abort()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.append(connection)

    def take_idle(self) -> _Connection | None:
        """The most recently used idle connection still open, if any (not a coroutine: the
        hot path reuses one without an await level)."""
        idle = self._idle
        if idle:
            oldest = asyncio.get_running_loop().time() - KEEPALIVE
            while idle:
                connection = idle.pop()
                if connection.idle_since > oldest and not connection.closed:
                    return connection
                connection.abort()
        return None

    async def connect(self, connect_timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(connect_timeout):
            _, connection = await loop.create_connection(
                lambda: _Connection(self),
                self.host,
                self.port,
                ssl=self.ssl,
                server_hostname=self.host if self.ssl else None,
            )
        return connection

    def close(self) -> None:
        self._closed = True
        for connection in self._idle:
            connection.abort()
        self._idle.clear()


class KeepAliveClient:
    """POSTs whose answers are read whole, on connections kept per host."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        # what aiohttp's client sent besides these (no User-Agent: turnout sends none)
        given = {name.lower() for name in headers}
        sent = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate"}
        defaults = {name: value for name, value in sent.items() if name.lower() not in given}
        self._headers = encoded_headers({**defaults, **headers})
        self._pools: dict[tuple[str, str | None, int | None], _HostPool] = {}
        self._ssl: ssl.SSLContext | None = None

    def _pool(self, url: yarl.URL) -> _HostPool:
        key = (url.scheme, url.raw_host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            if url.scheme not in ("http", "https") or not url.raw_host:
                raise ValueError(f"not an http(s) URL: {url}")
            if url.scheme == "https" and self._ssl is None:
                self._ssl = ssl.create_default_context()
            pool = self._pools[key] = _HostPool(url, self._ssl if url.scheme == "https" else None)
        return pool

    async def post(self, url: yarl.URL, body: bytes, connect_timeout: float) -> WholeAnswer:
        """The answer to POST `body`. Raises TimeoutError (connect), OSError or ConnectionError
        (UpstreamClosed, MalformedAnswer) for a connection that fails."""
        pool = self._pool(url)
        connection = pool.take_idle() or await pool.connect(connect_timeout)
        waiter: asyncio.Future[WholeAnswer] = asyncio.get_running_loop().create_future()
        connection.send(
            b"POST %s HTTP/1.1\r\n%s%sContent-Length: %d\r\n\r\n%s"
            % (url.raw_path_qs.encode(), pool.host_header, self._headers, len(body), body),
            waiter,
        )
        try:
            return await waiter
        except BaseException:
            connection.abort()  # cancelled (a deadline) or failed mid-answer: never reused
            raise

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
