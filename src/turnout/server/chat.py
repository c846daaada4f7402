"""The chat endpoints, one handler for every client dialect: decode the client's request,
plan, execute, and answer in the client's own shape, streaming or not."""

from __future__ import annotations

import contextlib

from aiohttp import web

from turnout.dialects.base import IngressDialect
from turnout.dialects.errors import InvalidRequest
from turnout.execute import AllTargetsFailed, Attempt, PassThroughError
from turnout.gateway import Gateway
from turnout.model import Request, UpstreamError
from turnout.routing import Plan
from turnout.routing.selector import NoCapableTarget
from turnout.server.headers import turnout_headers

_JSON = "application/json"


class ChatHandler:
    def __init__(self, gateway: Gateway, ingress: IngressDialect) -> None:
        self.gateway = gateway
        self.ingress = ingress

    def error_response(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        body = self.ingress.encode_error(
            status, message, code=code, param=param, error_type=error_type
        )
        return web.Response(status=status, body=body, content_type=_JSON, headers=headers)

    async def __call__(self, http: web.Request) -> web.StreamResponse:
        try:
            request = self.ingress.decode_request(await http.read())
        except InvalidRequest as exc:
            return self.error_response(exc.status, exc.message, param=exc.param)
        if "x-turnout-route-policy" in http.headers:
            return self.error_response(
                403,
                "x-turnout-route-policy is not accepted from clients: the route's policy is set"
                " in the gateway's config.",
                error_type="permission_error",
                param="x-turnout-route-policy",
            )
        request.session = http.headers.get("x-turnout-session") or None
        if exclude := http.headers.get("x-turnout-exclude"):
            request.exclude = frozenset(m.strip() for m in exclude.split(",") if m.strip())
        plan = self.gateway.planner.plan(request.model)
        if plan is None:
            known = ", ".join(sorted(self.gateway.config.routes)) or "none"
            return self.error_response(
                404,
                f"The model {request.model!r} is not a route or model of this gateway"
                f" (routes: {known}).",
                code="model_not_found",
                param="model",
            )
        try:
            selection = await self.gateway.selector.select(plan, request)
        except NoCapableTarget as exc:
            return self.error_response(400, exc.message, code=exc.code, param=exc.param)
        plan, skipped = selection.plan, selection.skipped
        try:
            if request.stream:
                return await self._stream(http, request, plan, skipped)
            completion = await self.gateway.executor.complete(plan, request, skipped)
        except AllTargetsFailed as exc:
            return self._all_failed(exc)
        except PassThroughError as exc:
            return self._pass_through(exc, plan.route)
        headers = turnout_headers(
            plan.route,
            completion.target.name,
            completion.tries,
            completion.attempts,
            completion.stale_age,
        )
        if completion.validated:
            headers["x-turnout-guard"] = "valid"
        self.gateway.selector.remember(plan.route, request, completion.target.name)
        body = self.ingress.encode_response(completion.response, completion.target.name)
        return web.Response(body=body, content_type=_JSON, headers=headers)

    async def _stream(
        self, http: web.Request, request: Request, plan: Plan, skipped: list[Attempt]
    ) -> web.StreamResponse:
        stream = await self.gateway.executor.stream(plan, request, skipped)
        self.gateway.selector.remember(plan.route, request, stream.target.name)
        headers = turnout_headers(
            plan.route, stream.target.name, stream.tries, stream.attempts, stream.stale_age
        )
        headers["content-type"] = "text/event-stream"
        headers["cache-control"] = "no-cache"
        response = web.StreamResponse(headers=headers)
        await response.prepare(http)
        encoder = self.ingress.stream_encoder(request, stream.target.name)
        usage = None
        try:
            if opening := encoder.start():
                await response.write(opening)
            async with contextlib.aclosing(stream.deltas()) as deltas:
                async for delta in deltas:
                    if delta.usage is not None:
                        usage = delta.usage
                    if event := encoder.delta(delta):
                        await response.write(event)
            await response.write(encoder.finish(usage))
        except UpstreamError as exc:
            # content already reached the client: say so explicitly, never truncate silently
            message = f"the upstream stream failed after it started: {exc.message}"
            await response.write(encoder.error(502, message, exc.error_class.value))
        return response

    def _all_failed(self, exc: AllTargetsFailed) -> web.Response:
        headers = turnout_headers(exc.plan.route, None, exc.tries, exc.attempts)
        if exc.retry_after is not None:
            headers["retry-after"] = str(max(1, round(exc.retry_after)))
        return self.error_response(
            503,
            str(exc),
            code="all_targets_unavailable",
            error_type="service_unavailable",
            headers=headers,
        )

    def _pass_through(self, exc: PassThroughError, route: str) -> web.Response:
        error = exc.error
        headers = turnout_headers(route, exc.target.name, exc.tries, exc.attempts)
        return self.error_response(
            error.status or 400,
            error.message,
            code=error.code,
            param=error.param,
            error_type=error.error_type,
            headers=headers,
        )
