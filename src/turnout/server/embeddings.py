"""`POST /v1/embeddings`, OpenAI's embeddings API: read and decode the request, hand it to
the core (`Gateway.embed`), encode the vectors in the format the client asked for, with the
same x-turnout-* headers as chat. Errors are OpenAI's shape; every request gets exactly one
ledger row (dialect "embeddings"), whatever happens: the core's Exchange sees to it."""

from __future__ import annotations

import asyncio

from aiohttp import web

from turnout.dialects.openai import embeddings as dialect
from turnout.dialects.openai.ingress import INGRESS as OPENAI
from turnout.execute.relay import SHUTTING_DOWN
from turnout.gateway import Gateway, Refused
from turnout.model.embeddings import EmbeddingRequest
from turnout.model.errors import GatewayError
from turnout.server.body import read_body
from turnout.server.chat import HttpClient
from turnout.server.drain import InFlight
from turnout.server.errors import render_error

DIALECT = "embeddings"  # the ledger's name for requests that came in here


class EmbeddingsHandler:
    def __init__(self, gateway: Gateway, inflight: InFlight) -> None:
        self.gateway = gateway
        self.inflight = inflight  # the server's: its close() drains what is tracked here

    async def __call__(self, http: web.Request) -> web.StreamResponse:
        task = self.inflight.enter()
        try:
            return await self._handle(http)
        finally:
            self.inflight.leave(task)

    async def _handle(self, http: web.Request) -> web.StreamResponse:
        exchange = self.gateway.arrive(DIALECT, HttpClient(http, self.inflight))
        try:
            await self.gateway.identify(exchange, http.headers, http.remote)
            raw = await read_body(http, exchange.runtime.config.server.body_timeout)
            request = _decode(raw, http)
            done = await self.gateway.embed(request, exchange)
        except GatewayError as refused:
            return render_error(exchange.refuse(refused), OPENAI)
        except asyncio.CancelledError:
            if not self.inflight.absorb_cut():
                exchange.finish()
                raise
            # the shutdown grace ran out before the answer: say so in the client's shape
            return render_error(exchange.refuse(_shutting_down()), OPENAI)
        finally:
            exchange.finish()  # (once: an answered or refused request's is already sent)
        body = dialect.encode_response(
            done.embedded.result, done.answer.model, request.encoding_format
        )
        return web.Response(
            body=body, content_type="application/json", headers=done.answer.headers()
        )


def _decode(raw: bytes, http: web.Request) -> EmbeddingRequest:
    request = dialect.decode_request(raw)  # or InvalidRequest
    headers = http.headers
    # as for chat: an admin's policy override, the session, models to skip
    request.policy = headers.get("x-turnout-route-policy") or None
    request.session = headers.get("x-turnout-session") or None
    if exclude := headers.get("x-turnout-exclude"):
        request.exclude = frozenset(m.strip() for m in exclude.split(",") if m.strip())
    return request


def _shutting_down() -> Refused:
    return Refused(
        503,
        SHUTTING_DOWN,
        code="gateway_shutting_down",
        error_type="service_unavailable",
        headers={"retry-after": "1"},
    )
