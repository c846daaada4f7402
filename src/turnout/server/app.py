"""The HTTP server: aiohttp's low-level server, one dispatcher, errors in the client's shape.

turnout serves a handful of fixed paths, so a dictionary lookup replaces aiohttp's
Application, router and middleware chain: on the bench that machinery cost about 8% of a
proxied request (the same floor proxy served 8.6% more requests/s without it).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from typing import Self

from aiohttp import web
from aiohttp.typedefs import Handler

from turnout.dashboard import DashboardEndpoints
from turnout.dialects.anthropic.ingress import INGRESS as ANTHROPIC
from turnout.dialects.openai.ingress import INGRESS as OPENAI
from turnout.dialects.responses.ingress import INGRESS as RESPONSES
from turnout.events import ConfigReloaded
from turnout.gateway import CLIENT_CLOSED, Gateway
from turnout.metrics import MetricsEndpoint
from turnout.server.admin import AdminEndpoints
from turnout.server.chat import ChatHandler
from turnout.server.connections import ConnectionGuard, GuardedServer
from turnout.server.count_tokens import CountTokens
from turnout.server.drain import InFlight
from turnout.server.embeddings import EmbeddingsHandler
from turnout.server.errors import error_response
from turnout.server.reload import WorkerBoard
from turnout.traces import attach_traces

log = logging.getLogger("turnout.server")

MAX_BODY = 32 * 1024 * 1024  # chat requests with images or long documents are large
# seconds aiohttp gives each connection on close(), after the drain (GatewayServer._drain)
# has let requests finish for `server.shutdown_grace` and ended the rest: they are idle by then
SHUTDOWN_TIMEOUT = 2.0
_CUT_WAIT = 3.0  # seconds requests ended at the end of the grace get to send their error


class Dispatcher:
    """Each request to its handler by exact path and method. Every error the client sees
    is in its API's shape (404, 405, 408, 413, 415, 500 included); the process keeps serving.
    A client that hangs up is normal: one DEBUG line, no traceback."""

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Handler]] = {}
        self._prefixes: dict[str, dict[str, Handler]] = {}  # "/v1/models/" + any id

    def add(self, method: str, path: str, handler: Handler) -> None:
        """`handler` for `path`; a path ending in "/*" takes any path under it."""
        routes = self._routes
        if path.endswith("/*"):
            routes, path = self._prefixes, path[:-1]
        methods = routes.setdefault(path, {})
        methods[method] = handler
        if method == "GET":
            methods.setdefault("HEAD", handler)  # aiohttp leaves the body out of HEAD answers

    def _under_prefix(self, path: str) -> dict[str, Handler] | None:
        for prefix, methods in self._prefixes.items():
            if path.startswith(prefix) and len(path) > len(prefix):
                return methods
        return None

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        methods = self._routes.get(request.path) or self._under_prefix(request.path)
        try:
            if methods is None:
                raise web.HTTPNotFound()
            handler = methods.get(request.method)
            if handler is None:
                raise web.HTTPMethodNotAllowed(request.method, methods)
            return _closing_if_body_unread(await handler(request))  # type: ignore[arg-type]
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = {
                404: f"no such endpoint: {request.method} {request.path}",
                405: f"method {request.method} is not allowed on {request.path}",
                413: f"request body larger than {MAX_BODY} bytes",
            }.get(exc.status, exc.reason)
            response = error_response(exc.status, message, path=request.path)
            if allow := exc.headers.get("Allow"):
                response.headers["Allow"] = allow
            return _closing_if_body_unread(response)
        except ConnectionError as exc:
            if not _client_gone(request):
                log.exception("unexpected error on %s %s", request.method, request.path)
                return error_response(
                    500, "internal gateway error", path=request.path, error_type="api_error"
                )
            # the client went away (mid-body, mid-answer): normal, and nobody to answer; what
            # is returned is never sent (aiohttp notices the closed transport quietly)
            log.debug(
                "client %s left during %s %s: %s", request.remote, request.method, request.path, exc
            )
            return web.Response(status=CLIENT_CLOSED)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return error_response(
                500, "internal gateway error", path=request.path, error_type="api_error"
            )


def _client_gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _closing_if_body_unread(response: web.StreamResponse) -> web.StreamResponse:
    """A body refused part-read (too slow, too large) leaves the connection mid-request: it
    is closed after the answer, and the answer says so."""
    if response.status in (408, 413):
        response.force_close()
    return response


def make_dispatcher(
    gateway: Gateway, inflight: InFlight, board: WorkerBoard | None = None
) -> Dispatcher:
    dispatcher = Dispatcher()
    dispatcher.add("POST", "/v1/chat/completions", ChatHandler(gateway, OPENAI, inflight))
    dispatcher.add("POST", "/v1/messages", ChatHandler(gateway, ANTHROPIC, inflight))
    dispatcher.add("POST", "/v1/responses", ChatHandler(gateway, RESPONSES, inflight))
    dispatcher.add("POST", "/v1/messages/count_tokens", CountTokens(gateway))
    dispatcher.add("POST", "/v1/embeddings", EmbeddingsHandler(gateway, inflight))
    dispatcher.add("GET", "/metrics", MetricsEndpoint(gateway))  # Prometheus
    attach_traces(gateway)  # OpenTelemetry spans, when `traces:` turns them on
    admin = AdminEndpoints(gateway, board)
    for path, handler in admin.routes():
        dispatcher.add("GET", path, handler)
    for path, handler in admin.post_routes():
        dispatcher.add("POST", path, handler)
    for path, handler in DashboardEndpoints(gateway).routes():  # GET /dashboard
        dispatcher.add("GET", path, handler)
    return dispatcher


def _request_factory(loop: asyncio.AbstractEventLoop) -> Callable[..., web.BaseRequest]:
    """aiohttp's own request factory, with a body limit fit for chat requests."""

    def make(message, payload, protocol, writer, task) -> web.BaseRequest:
        return web.BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=MAX_BODY
        )

    return make


class ListenError(Exception):
    """The gateway's address cannot be bound (in use, not this host's, not permitted)."""


class GatewayServer:
    """The gateway serving on host:port, from start() (or `async with`) until close().
    close() stops taking connections, lets in-flight requests finish for the configured
    grace, ends those still running in their client's dialect, then drains the ledger."""

    def __init__(self, gateway: Gateway, host: str, port: int, *, reuse_port: bool = False) -> None:
        self.gateway = gateway
        self.host = host
        self.requested_port = port
        self.reuse_port = reuse_port
        self._runner: web.ServerRunner | None = None
        self.inflight = InFlight()  # the chat requests being served, for a graceful close
        self.board = WorkerBoard.from_env()  # with --workers: which config each worker runs
        if self.board is not None:  # one alert per change from all the workers, not N
            gateway.sinks.claim_alerts_in(self.board.directory)
        self._dispatcher: Dispatcher | None = None

    @property
    def port(self) -> int:
        """The bound port (the requested one, or the one the OS chose for port 0)."""
        assert self._runner is not None, "the server is not started"
        return self._runner.addresses[0][1]

    async def start(self) -> None:
        # the endpoints first: their bus subscribers (metrics, dashboard) then hear every
        # event the gateway publishes as it starts
        self._dispatcher = make_dispatcher(self.gateway, self.inflight, self.board)
        if self.board is not None:
            self._post_version()
            self.gateway.bus.subscribe(
                lambda _: self._post_version(), kinds=(ConfigReloaded,), name="worker-board"
            )
        await self.gateway.start()
        try:
            await self._listen()
        except BaseException:
            await self.close()  # a port in use, say: the ledger still closes cleanly
            raise

    async def _listen(self) -> None:
        assert self._dispatcher is not None
        limits = self.gateway.config.server
        server = GuardedServer(
            self._dispatcher,
            guard=ConnectionGuard(limits.header_timeout, limits.max_connections_per_client),
            request_factory=_request_factory(asyncio.get_running_loop()),
            access_log=None,
            auto_decompress=False,  # server/body.py decodes, with errors in the client's shape
        )
        self._runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.requested_port, reuse_port=self.reuse_port or None
        )
        try:
            await site.start()
        except OSError as exc:
            where = f"{self.host}:{self.requested_port}"
            raise ListenError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        # everything loaded so far lives as long as the process: keep the garbage collector
        # from scanning it again on every full collection
        gc.collect()
        gc.freeze()
        # a request allocates a few hundred short-lived objects: at the default 700 the young
        # generation is scanned every few requests, at 20,000 most of it has been freed by
        # then (2% more requests/s at c=8, bench/RESULTS.md issue 12; 100,000 is slower)
        gc.set_threshold(20_000, 20, 20)

    async def close(self) -> None:
        try:
            if self._runner is not None:
                await self._drain()
                await self._runner.cleanup()
        finally:
            await self.gateway.close()  # last: drains every ledger row still queued
            if self.board is not None:
                self.board.remove()

    def _post_version(self) -> None:
        assert self.board is not None
        self.board.post(self.gateway.runtime.version, self.gateway.loaded_at)

    async def _drain(self) -> None:
        assert self._runner is not None
        for site in list(self._runner.sites):
            await site.stop()  # no new connections
        if self._runner.server is not None:
            self._runner.server.pre_shutdown()  # idle keep-alive connections close now
        inflight = self.inflight
        grace = self.gateway.config.server.shutdown_grace
        if await inflight.wait_idle(grace):
            return
        log.warning(
            "shutdown: %d requests still running after the %gs grace: ending them",
            inflight.cut_all(),
            grace,
        )
        await inflight.wait_idle(_CUT_WAIT)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
