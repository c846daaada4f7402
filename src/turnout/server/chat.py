"""The chat endpoints, one handler for every client dialect. The handler only does what is
HTTP's or the dialect's: read and decode the request, hand it to the core
(`Gateway.handle`), then encode the answer (or the refusal) in the client's own shape and
write its headers. A streamed answer is relayed by the core's Relay through this handler's
client end. Every request gets exactly one ledger row, whatever happens: the core's
Exchange sees to it."""

from __future__ import annotations

import asyncio

from aiohttp import web

from turnout.dialects.base import IngressDialect
from turnout.execute.relay import SHUTTING_DOWN
from turnout.gateway import Answer, Gateway, Refused
from turnout.model import Request
from turnout.model.errors import GatewayError
from turnout.server.body import read_body, read_body_now
from turnout.server.drain import InFlight
from turnout.server.errors import render_error

_JSON = "application/json"


def connected(http: web.BaseRequest) -> bool:
    """False once the client has hung up (aiohttp drops the transport on connection loss)."""
    transport = http.transport
    return transport is not None and not transport.is_closing()


class HttpClient:
    """The client's connection as the core sees it (gateway.Client, relay.StreamClient)."""

    __slots__ = ("http", "inflight", "response")

    def __init__(self, http: web.Request, inflight: InFlight) -> None:
        self.http = http
        self.inflight = inflight
        self.response: web.StreamResponse | None = None  # a stream's, once the core has one

    def connected(self) -> bool:
        return connected(self.http)

    def absorb_cut(self) -> bool:
        return self.inflight.absorb_cut()

    async def open(self) -> None:
        assert self.response is not None
        if not connected(self.http):
            raise ConnectionResetError("the client hung up")
        await self.response.prepare(self.http)

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        await self.response.write(data)


class ChatHandler:
    def __init__(self, gateway: Gateway, ingress: IngressDialect, inflight: InFlight) -> None:
        self.gateway = gateway
        self.ingress = ingress
        self.inflight = inflight  # the server's: its close() drains what is tracked here

    async def __call__(self, http: web.Request) -> web.StreamResponse:
        # (one coroutine, not a tracking one awaiting a handling one: every await level is
        # passed through again each time the request resumes)
        task = self.inflight.enter()
        try:
            client = HttpClient(http, self.inflight)
            exchange = self.gateway.arrive(self.ingress.name, client)
            try:
                if not self.gateway.identify_now(exchange, http.headers, http.remote):
                    await self.gateway.identify(exchange, http.headers, http.remote)
                raw = read_body_now(http)
                if raw is None:
                    raw = await read_body(http, exchange.runtime.config.server.body_timeout)
                request = self._decode(raw, http)
                # the client's cache-control (no-cache, no-store), for routes with a cache
                answer = await self.gateway.handle(
                    request, exchange, http.headers.get("cache-control")
                )
            except GatewayError as refused:
                return render_error(exchange.refuse(refused), self.ingress)
            except asyncio.CancelledError:
                if not self.inflight.absorb_cut():
                    exchange.finish()
                    raise
                # the shutdown grace ran out before anything was sent: say so in the client's
                # shape
                return render_error(exchange.refuse(_shutting_down()), self.ingress)
            except BaseException:
                exchange.finish()  # a failure of ours is still a row (a 500, outcome error)
                raise
            try:
                if answer.relay is None:
                    assert answer.response is not None
                    body = self.ingress.encode_response(answer.response, answer.model)
                    return web.Response(body=body, content_type=_JSON, headers=answer.headers())
                return await self._relay(client, request, answer)
            finally:
                exchange.finish()  # (once: a whole answer's and a relayed stream's are already)
        finally:
            self.inflight.leave(task)

    def _decode(self, raw: bytes, http: web.Request) -> Request:
        request = self.ingress.decode_request(raw)  # or InvalidRequest
        headers = http.headers
        # an admin's override of the route's policy (the core checks who sent it, and the name)
        request.policy = headers.get("x-turnout-route-policy") or None
        # header values are at most 8190 bytes (aiohttp's parser refuses longer ones with a
        # 400); the session is hashed for stickiness and bounded in the ledger row
        request.session = headers.get("x-turnout-session") or None
        if exclude := headers.get("x-turnout-exclude"):
            request.exclude = frozenset(m.strip() for m in exclude.split(",") if m.strip())
        return request

    async def _relay(
        self, client: HttpClient, request: Request, answer: Answer
    ) -> web.StreamResponse:
        headers = answer.headers()
        headers["content-type"] = "text/event-stream"
        headers["cache-control"] = "no-cache"
        response = client.response = web.StreamResponse(headers=headers)
        assert answer.relay is not None
        await answer.relay.run(client, self.ingress.stream_encoder(request, answer.model))
        return response


def _shutting_down() -> Refused:
    return Refused(
        503,
        SHUTTING_DOWN,
        code="gateway_shutting_down",
        error_type="service_unavailable",
        headers={"retry-after": "1"},
    )
