"""The chat endpoints, one handler for every client dialect: who is calling, decode the
request, check the key's limits and budgets, plan, execute, answer in the client's own
shape (streaming or not), and account for it: exactly one ledger row per request, whatever
happens (errors, client disconnects, shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time

from aiohttp import web

from turnout.accounting.auth import Identity
from turnout.accounting.records import LedgerRow
from turnout.dialects.base import IngressDialect
from turnout.events import RequestFinished
from turnout.execute import AllTargetsFailed, PassThroughError
from turnout.execute.accumulate import Accumulator
from turnout.execute.stream import Stream
from turnout.gateway import Gateway
from turnout.model import Attempt, Request, Response, UpstreamError, Usage
from turnout.model.errors import GatewayError
from turnout.model.tokens import estimate_prompt_tokens
from turnout.routing import Plan, Target
from turnout.routing.policies import POLICIES
from turnout.server.body import read_body
from turnout.server.drain import CLIENT_CLOSED, InFlight
from turnout.server.errors import render_error
from turnout.server.headers import turnout_headers

_JSON = "application/json"
# request ids: a random per-process prefix and a counter, unique across workers and restarts
# without a urandom call per request
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count(1)
_ECHO_LIMIT = 100  # characters of a client's model name quoted back in an error
_SHUTTING_DOWN = "the gateway is shutting down; retry the request"


def next_request_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):016x}"


def quote(name: str) -> str:
    """A client's name as an error quotes it: the start of it only (it may be megabytes)."""
    if len(name) <= _ECHO_LIMIT:
        return repr(name)
    return f"{name[:_ECHO_LIMIT]!r}… ({len(name)} characters)"


def connected(http: web.BaseRequest) -> bool:
    """False once the client has hung up (aiohttp drops the transport on connection loss)."""
    transport = http.transport
    return transport is not None and not transport.is_closing()


def response_started(response: web.StreamResponse | None) -> bool:
    """True when the client has been sent something already (a stream's headers)."""
    return response is not None and response.prepared


class Refused(GatewayError):
    """The handler's own refusals (unknown route, rate limit, budget, all targets failed);
    the layers below raise theirs (AuthError, BodyError, InvalidRequest, NoCapableTarget),
    and all are answered alike, by `render_error`."""


class ChatHandler:
    def __init__(self, gateway: Gateway, ingress: IngressDialect, inflight: InFlight) -> None:
        self.gateway = gateway
        self.ingress = ingress
        self.inflight = inflight  # the server's: its close() drains what is tracked here

    def error_response(self, refused: GatewayError) -> web.Response:
        return render_error(refused, self.ingress)

    async def __call__(self, http: web.Request) -> web.StreamResponse:
        task = self.inflight.enter()
        try:
            return await self._handle(http)
        finally:
            self.inflight.leave(task)

    async def _handle(self, http: web.Request) -> web.StreamResponse:
        row = LedgerRow(
            id=next_request_id(),
            started_at=time.time(),
            route="",
            dialect=self.ingress.name,
            stream=False,
            status=500,
            outcome="error",
        )
        t0 = time.perf_counter()
        identity: Identity | None = None
        response: web.StreamResponse | None = None
        try:
            identity = await self._identify(http)
            row.key_id = identity.key_id
            request = self._decode(await self._body(http), http, identity)
            row.route, row.stream, row.session = request.model, request.stream, request.session
            plan = self._plan(request)
            self._admit(identity, plan, request)
            response = await self._answer(http, request, plan, row)
        except GatewayError as refused:
            row.status, row.error = refused.status, refused.message[:300]
            refused.headers["x-turnout-request-id"] = row.id
            response = self.error_response(refused)
        except asyncio.CancelledError:
            if not self.inflight.absorb_cut():
                raise
            # the shutdown grace ran out before anything was sent: say so in the client's shape
            row.status, row.outcome, row.error = 503, "shutdown", _SHUTTING_DOWN
            response = self.error_response(
                Refused(
                    503,
                    _SHUTTING_DOWN,
                    code="gateway_shutting_down",
                    error_type="service_unavailable",
                    headers={"x-turnout-request-id": row.id, "retry-after": "1"},
                )
            )
        finally:
            if not response_started(response) and not connected(http):
                row.status, row.outcome = CLIENT_CLOSED, "client_closed"
            row.latency_ms = (time.perf_counter() - t0) * 1000
            self.gateway.bus.publish(RequestFinished(row, identity.key if identity else None))
        return response

    # --- before any attempt -------------------------------------------------------------

    async def _identify(self, http: web.Request) -> Identity:
        return await self.gateway.auth.identify(http.headers, http.remote)  # or AuthError

    async def _body(self, http: web.Request) -> bytes:
        return await read_body(http, self.gateway.config.server.body_timeout)  # or BodyError

    def _decode(self, raw: bytes, http: web.Request, identity: Identity) -> Request:
        request = self.ingress.decode_request(raw)  # or InvalidRequest
        if policy := http.headers.get("x-turnout-route-policy"):
            if not identity.admin:
                raise Refused(
                    403,
                    "x-turnout-route-policy is accepted only from admin keys: the route's"
                    " policy is set in the gateway's config.",
                    error_type="permission_error",
                    param="x-turnout-route-policy",
                )
            if policy not in POLICIES:
                raise Refused(
                    400,
                    f"x-turnout-route-policy must be one of {', '.join(POLICIES)}.",
                    param="x-turnout-route-policy",
                )
            request.policy = policy
        # header values are at most 8190 bytes (aiohttp's parser refuses longer ones with a
        # 400); the session is hashed for stickiness and bounded in the ledger row
        request.session = http.headers.get("x-turnout-session") or None
        if exclude := http.headers.get("x-turnout-exclude"):
            request.exclude = frozenset(m.strip() for m in exclude.split(",") if m.strip())
        return request

    def _plan(self, request: Request) -> Plan:
        plan = self.gateway.planner.plan(request.model)
        if plan is None:
            known = ", ".join(sorted(self.gateway.config.routes)) or "none"
            raise Refused(
                404,
                f"The model {quote(request.model)} is not a route or model of this gateway"
                f" (routes: {known}).",
                code="model_not_found",
                param="model",
            )
        return plan

    def _admit(self, identity: Identity, plan: Plan, request: Request) -> None:
        """The key's rate limits, then budgets (block, or downgrade to cheaper targets)."""
        self.gateway.auth.authorize(identity, plan.route)  # or AuthError (a 403)
        accounting = self.gateway.accounting
        now = time.time()
        if identity.key is not None:
            wait = accounting.limiter.admit(identity.key, now)
            if wait is not None:
                raise Refused(
                    429,
                    f"Rate limit of key {identity.key.id} reached (rpm {identity.key.rpm},"
                    f" tpm {identity.key.tpm}); retry in {wait:.0f}s.",
                    code="key_rate_limited",
                    error_type="rate_limit_error",
                    headers={"retry-after": str(max(1, round(wait)))},
                )
        verdict = accounting.spend.check(identity.key, plan.route, now)
        if verdict.blocked is not None:
            raise Refused(
                429,
                f"The {verdict.blocked.label} is spent.",
                code="budget_exceeded",
                error_type="rate_limit_error",
            )
        over = {t.name for t in plan.targets if t.provider.name in verdict.providers_over}
        if verdict.downgrade:
            cheapest = min(t.price.output + t.price.input for t in plan.targets)
            over |= {t.name for t in plan.targets if t.price.output + t.price.input > cheapest}
        if over:
            request.exclude = request.exclude | over

    # --- the answer -----------------------------------------------------------------------

    async def _answer(
        self, http: web.Request, request: Request, plan: Plan, row: LedgerRow
    ) -> web.StreamResponse:
        selection = await self.gateway.selector.select(plan, request)  # or NoCapableTarget
        plan, skipped = selection.plan, selection.skipped
        try:
            if request.stream:
                return await self._stream(http, request, plan, skipped, row)
            completion = await self.gateway.executor.complete(plan, request, skipped)
        except AllTargetsFailed as exc:
            row.attempts = [{"model": a.model, "reason": a.reason} for a in exc.attempts]
            raise self._all_failed(exc) from None
        except PassThroughError as exc:
            row.attempts = [{"model": a.model, "reason": a.reason} for a in exc.attempts]
            row.model, row.provider = exc.target.name, exc.target.provider.name
            raise self._pass_through(exc, plan.route) from None
        target = completion.target
        self._answered(row, plan, target, completion.attempts, completion.response.usage)
        row.status, row.outcome = 200, "stale" if completion.stale_age is not None else "ok"
        headers = turnout_headers(
            plan.route, target.name, completion.tries, completion.attempts, completion.stale_age
        )
        headers["x-turnout-request-id"] = row.id
        headers["x-turnout-cost-usd"] = f"{row.cost_usd:.8f}"
        if plan.baseline is not None:
            headers["x-turnout-saved-usd"] = f"{row.saved_usd:.8f}"
        if completion.validated:
            headers["x-turnout-guard"] = "valid"
        self.gateway.selector.remember(plan, request, target.name)
        self._capture(row, plan, request, completion.response)
        completion.response.usage.cost = row.cost_usd
        body = self.ingress.encode_response(completion.response, target.name)
        return web.Response(body=body, content_type=_JSON, headers=headers)

    def _capture(self, row: LedgerRow, plan: Plan, request: Request, response: Response) -> None:
        capture = self.gateway.accounting.capture
        if capture is not None and row.model and capture.wants(plan.route):
            capture.record(row.id, plan.route, row.model, request, response)

    def _answered(
        self, row: LedgerRow, plan: Plan, target: Target, attempts: list[Attempt], usage: Usage
    ) -> None:
        row.model, row.provider = target.name, target.provider.name
        row.attempts = [{"model": a.model, "reason": a.reason} for a in attempts]
        self.gateway.accounting.price(row, target.price, usage, plan.baseline)

    async def _stream(
        self,
        http: web.Request,
        request: Request,
        plan: Plan,
        skipped: list[Attempt],
        row: LedgerRow,
    ) -> web.StreamResponse:
        stream = await self.gateway.executor.stream(plan, request, skipped)
        target = stream.target
        self.gateway.selector.remember(plan, request, target.name)
        headers = turnout_headers(
            plan.route, target.name, stream.tries, stream.attempts, stream.stale_age
        )
        headers["x-turnout-request-id"] = row.id
        headers["content-type"] = "text/event-stream"
        headers["cache-control"] = "no-cache"
        response = web.StreamResponse(headers=headers)
        try:
            if not connected(http):
                raise ConnectionResetError("the client hung up")
            await response.prepare(http)
        except ConnectionError:
            # the client left while the upstream was getting ready: nothing to send it
            await self._abandon(stream, request, plan, row)
            return response
        row.status = 200
        row.outcome = "client_closed"  # until the stream ends well
        encoder = self.ingress.stream_encoder(request, target.name)
        usage: Usage | None = None
        pieces = 0
        try:
            if opening := encoder.start():
                await response.write(opening)
            capture = self.gateway.accounting.capture
            kept = Accumulator() if capture is not None and plan.route in capture.routes else None
            async with contextlib.aclosing(stream.deltas()) as deltas:
                async for delta in deltas:
                    if kept is not None:
                        kept.add(delta)
                    if row.ttft_ms is None and delta.has_content:
                        # the client's wait: from its request's arrival to the first token the
                        # executor received (failed attempts before it included)
                        first = stream.first_token_at or time.time()
                        row.ttft_ms = (first - row.started_at) * 1000
                    if delta.usage is not None:
                        usage = delta.usage
                    pieces += 1 if delta.content else 0
                    if event := encoder.delta(delta):
                        await response.write(event)
            row.outcome = "stale" if stream.stale_age is not None else "ok"
            if usage is not None:
                self._answered(row, plan, target, stream.attempts, usage)
                usage.cost = row.cost_usd
            if kept is not None:
                row.model = target.name
                self._capture(row, plan, request, kept.response(row.id, target.name))
            await response.write(encoder.finish(usage))
        except UpstreamError as exc:
            # content already reached the client: say so explicitly, never truncate silently
            row.outcome, row.error = "stream_failed", exc.message[:300]
            message = f"the upstream stream failed after it started: {exc.message}"
            with contextlib.suppress(ConnectionError):  # the client may be gone too
                await response.write(encoder.error(502, message, exc.error_class.value))
        except ConnectionError:
            pass  # the client hung up mid-stream: the row says client_closed
        except asyncio.CancelledError:
            if not self.inflight.absorb_cut():
                raise
            # the shutdown grace ran out mid-stream: an explicit error event, then the body
            # ends properly (aiohttp writes the last chunk when the handler returns)
            row.outcome, row.error = "shutdown", _SHUTTING_DOWN
            with contextlib.suppress(ConnectionError):
                await response.write(encoder.error(503, _SHUTTING_DOWN, "gateway_shutting_down"))
        finally:
            if usage is None:
                # the stream ended early: the upstream never reported usage, so count it
                estimate = Usage(estimate_prompt_tokens(request), pieces)
                self._answered(row, plan, target, stream.attempts, estimate)
                row.usage_estimated = True
        return response

    async def _abandon(self, stream: Stream, request: Request, plan: Plan, row: LedgerRow) -> None:
        """Close a committed stream nobody will read; its row counts the prompt sent."""
        async with contextlib.aclosing(stream.deltas()) as deltas:
            async for _ in deltas:
                break  # starting it is enough: closing it then releases the upstream
        row.status, row.outcome = CLIENT_CLOSED, "client_closed"
        estimate = Usage(estimate_prompt_tokens(request), 0)
        self._answered(row, plan, stream.target, stream.attempts, estimate)
        row.usage_estimated = True

    # --- failures -------------------------------------------------------------------------

    @staticmethod
    def _all_failed(exc: AllTargetsFailed) -> Refused:
        headers = turnout_headers(exc.plan.route, None, exc.tries, exc.attempts)
        if exc.retry_after is not None:
            headers["retry-after"] = str(max(1, round(exc.retry_after)))
        return Refused(
            503,
            str(exc),
            code="all_targets_unavailable",
            error_type="service_unavailable",
            headers=headers,
        )

    @staticmethod
    def _pass_through(exc: PassThroughError, route: str) -> Refused:
        error = exc.error
        return Refused(
            error.status or 400,
            error.message,
            code=error.code,
            param=error.param,
            error_type=error.error_type,
            headers=turnout_headers(route, exc.target.name, exc.tries, exc.attempts),
        )
