"""What one client can hold of the server's connections: a request's headers must arrive
whole within `server.header_timeout` (slowloris), and one address may keep at most
`server.max_connections_per_client` connections open. Malformed HTTP and hang-ups are the
client's doing: answered in OpenAI's error shape or dropped, logged at DEBUG, no traceback.

aiohttp bounds neither (its keep-alive timer only closes a connection idle between requests,
after an hour), so the server makes its connections from a RequestHandler subclass. The
subclass reads three of aiohttp's internals (`_waiter`, `_messages`, `_request_count`,
present since aiohttp 3.8) to tell header bytes from body bytes.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from turnout.server.errors import error_response

log = logging.getLogger("turnout.server")

# what a client causes, not the gateway: never worth a traceback
_CLIENTS_DOING = (ConnectionError, HttpProcessingError, RequestPayloadError)


_REQUEST_LINE = 256  # bytes kept of a request's start: "POST /v1/messages HTTP/1.1"


def _path_of(request_line: bytes) -> str:
    """The path of a request line, or "" when it is not one (the bytes are the client's)."""
    parts = request_line.split(b"\r\n", 1)[0].split(b" ")
    return parts[1].decode("latin-1") if len(parts) >= 2 else ""


class ConnectionGuard:
    """The limits, and the count of open connections per client address."""

    def __init__(self, header_timeout: float, max_per_client: int) -> None:
        self.header_timeout = header_timeout
        self.max_per_client = max_per_client
        self._open: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        count = self._open.get(address, 0)
        if count >= self.max_per_client:
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._open.pop(address, 1) - 1
        if count > 0:
            self._open[address] = count


class GuardedConnection(RequestHandler):
    """aiohttp's connection handler, with the guard's limits applied."""

    __slots__ = ("_address", "_guard", "_header_timer", "_refused", "_request_line")

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address: str | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False
        # the first bytes of the request being received: when its headers cannot be parsed,
        # aiohttp forgets its path, and the path says which API's error shape to answer in
        self._request_line = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else None  # None: a Unix socket
        if address is not None and self._guard.max_per_client and not self._guard.admit(address):
            # closed before a byte is read: an over-limit client costs nothing more
            self._refused = True
            log.debug(
                "refused a connection from %s: %d already open", address, self._guard.max_per_client
            )
            transport.close()
            return
        self._address = address
        super().connection_made(transport)
        self._expect_headers()  # the first request's, from the moment the connection opens

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._stop_header_timer()
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        between = self._between_requests()
        if between or not self._request_line:  # (the first request: no waiter exists yet)
            self._request_line = data[:_REQUEST_LINE]
        starts_request = self._header_timer is None and between
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._stop_header_timer()  # the headers are whole: the body has its own timeout
        elif starts_request:
            # a keep-alive connection's next request has begun but its headers are not whole
            # (the usual request arrives whole at once and never needs the timer)
            self._expect_headers()

    def _between_requests(self) -> bool:
        """Waiting for a new request: no request being handled, none parsed and queued, so
        whatever arrives now is the start of the next request's headers."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def _expect_headers(self) -> None:
        loop = asyncio.get_running_loop()
        self._header_timer = loop.call_later(self._guard.header_timeout, self._headers_overdue)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        log.debug(
            "closed a connection from %s: no whole request headers within %gs",
            self._address,
            self._guard.header_timeout,
        )
        self.force_close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, _CLIENTS_DOING):
            log.debug("%s: %s", args[0] % args[1:] if args else "client error", exc)
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to what never reached the dispatcher (malformed HTTP: a bad
        request line, a header line too long) in OpenAI's error shape, the path being unknown
        when the request cannot be parsed."""
        if status >= 500 and not isinstance(exc, ConnectionError):
            return super().handle_error(request, status, exc, message)
        log.debug("bad request from %s: %s", request.remote, message or exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started: nothing more can be sent")
        text = message or HTTPStatus(status).phrase
        response = error_response(
            status, f"malformed HTTP request: {text}", path=_path_of(self._request_line)
        )
        response.force_close()
        return response


class GuardedServer(web.Server):
    """aiohttp's low-level server, making GuardedConnections."""

    def __init__(self, handler: Any, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return GuardedConnection(self, self.guard, loop=asyncio.get_running_loop(), **self._kwargs)
