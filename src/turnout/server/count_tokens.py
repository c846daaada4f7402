"""`POST /v1/messages/count_tokens`, Anthropic's token counting, for the route's first model.

The prompt is decoded as a Messages request (max_tokens may be left out, as Anthropic allows
here) and counted with tiktoken's cl100k_base, the tokenizer turnout carries: exact for
OpenAI's GPT-3.5/4 family, an estimate (within about 10-15%) for Llama, Claude and Gemini
models, which the `x-turnout-token-count` header says. Nothing is sent upstream and nothing is
ledgered: counting is free, as it is at Anthropic."""

from __future__ import annotations

import orjson
from aiohttp import web

from turnout.accounting.auth import Authenticator
from turnout.dialects.anthropic.ingress import INGRESS as ANTHROPIC
from turnout.dialects.errors import InvalidRequest
from turnout.gateway import Gateway
from turnout.gateway.admission import plan_for
from turnout.model import Request
from turnout.model.errors import GatewayError
from turnout.routing.capabilities import count_prompt
from turnout.server.body import read_body
from turnout.server.errors import render_error

_EXACT_FOR = ("gpt-3.5", "gpt-4")  # the model families cl100k_base is the tokenizer of


class CountTokens:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, http: web.Request) -> web.Response:
        runtime = self.gateway.runtime
        try:
            identity = await self.gateway.auth.identify(http.headers, runtime.auth, http.remote)
            request = _decode(await read_body(http, runtime.config.server.body_timeout))
            plan = plan_for(runtime, request)
            Authenticator.authorize(identity, plan.route)
        except GatewayError as refused:
            return render_error(refused, ANTHROPIC)
        target = plan.targets[0]
        exact = target.upstream_model.startswith(_EXACT_FOR)
        headers = {
            "x-turnout-route": plan.route,
            "x-turnout-model": target.name,
            "x-turnout-token-count": "exact (cl100k_base)" if exact else "estimate (cl100k_base)",
        }
        # a long prompt is counted off the event loop, and earlier messages come from the cache
        body = orjson.dumps({"input_tokens": await count_prompt(request)})
        return web.Response(body=body, content_type="application/json", headers=headers)


def _decode(raw: bytes) -> Request:
    """A Messages request without max_tokens (count_tokens takes none)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ANTHROPIC.decode_request(raw)  # its own error for a body that is not JSON
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    body.setdefault("max_tokens", 1)
    return ANTHROPIC.decode_request(orjson.dumps(body))
