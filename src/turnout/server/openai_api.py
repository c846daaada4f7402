"""POST /v1/chat/completions in the OpenAI dialect, streaming and not."""

from __future__ import annotations

import contextlib
import time
import uuid

from aiohttp import web

from turnout.dialects.openai import ingress
from turnout.dialects.sse import frame
from turnout.execute import AllTargetsFailed, PassThroughError
from turnout.gateway import Gateway
from turnout.model import Delta, Request, UpstreamError
from turnout.routing import Plan
from turnout.server.headers import turnout_headers

_JSON = "application/json"
_DONE = b"data: [DONE]\n\n"


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    error_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = ingress.encode_error(status, message, code=code, param=param, error_type=error_type)
    return web.Response(status=status, body=body, content_type=_JSON, headers=headers)


def _all_failed(exc: AllTargetsFailed) -> web.Response:
    headers = turnout_headers(exc.plan.route, None, exc.tries, exc.attempts)
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, round(exc.retry_after)))
    return error_response(
        503,
        str(exc),
        code="all_targets_unavailable",
        error_type="service_unavailable",
        headers=headers,
    )


def _pass_through(exc: PassThroughError, route: str) -> web.Response:
    error = exc.error
    headers = turnout_headers(route, exc.target.name, exc.tries, exc.attempts)
    return error_response(
        error.status or 400,
        error.message,
        code=error.code,
        param=error.param,
        error_type=error.error_type,
        headers=headers,
    )


class OpenAIChatHandler:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, http: web.Request) -> web.StreamResponse:
        try:
            request = ingress.decode_request(await http.read())
        except ingress.InvalidRequest as exc:
            return error_response(exc.status, exc.message, param=exc.param)
        plan = self.gateway.planner.plan(request.model)
        if plan is None:
            known = ", ".join(sorted(self.gateway.config.routes)) or "none"
            return error_response(
                404,
                f"The model {request.model!r} is not a route or model of this gateway"
                f" (routes: {known}).",
                code="model_not_found",
                param="model",
            )
        try:
            if request.stream:
                return await self._stream(http, request, plan)
            completion = await self.gateway.executor.complete(plan, request)
        except AllTargetsFailed as exc:
            return _all_failed(exc)
        except PassThroughError as exc:
            return _pass_through(exc, plan.route)
        headers = turnout_headers(
            plan.route,
            completion.target.name,
            completion.tries,
            completion.attempts,
            completion.stale_age,
        )
        body = ingress.encode_response(completion.response, completion.target.name)
        return web.Response(body=body, content_type=_JSON, headers=headers)

    async def _stream(self, http: web.Request, request: Request, plan: Plan) -> web.StreamResponse:
        stream = await self.gateway.executor.stream(plan, request)
        headers = turnout_headers(
            plan.route, stream.target.name, stream.tries, stream.attempts, stream.stale_age
        )
        headers["content-type"] = "text/event-stream"
        headers["cache-control"] = "no-cache"
        response = web.StreamResponse(headers=headers)
        await response.prepare(http)
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        model = stream.target.name
        usage = None
        try:
            async with contextlib.aclosing(stream.deltas()) as deltas:
                async for delta in deltas:
                    if delta.usage is not None:
                        usage = delta.usage
                    if delta.has_content or delta.finish_reason or delta.role:
                        delta.usage = None  # usage goes in its own last chunk, as OpenAI's does
                        chunk = ingress.encode_chunk(delta, chunk_id, created, model)
                        await response.write(frame(chunk))
            if request.include_usage and usage is not None:
                usage_delta = Delta(usage=usage)
                await response.write(
                    frame(ingress.encode_chunk(usage_delta, chunk_id, created, model))
                )
            await response.write(_DONE)
        except UpstreamError as exc:
            # content already reached the client: say so explicitly, never truncate silently
            error = ingress.encode_error(
                502,
                f"the upstream stream failed after it started: {exc.message}",
                error_type="upstream_error",
                code=exc.error_class.value,
            )
            await response.write(frame(error))
        return response
