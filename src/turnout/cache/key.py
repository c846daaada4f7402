"""What decides an answer, hashed: the cache key of a request.

Two requests share a key when everything that decides the answer is the same: the route and
the models behind it (a reload that changes them gives new keys: the old answers are never
served again and age out), the API key's scope (unless the route shares answers across keys),
the client's wire format (an answer is replayed in the shape it was given), the messages,
tools, tool choice, response format, sampling parameters, max tokens and stop sequences, and
the parameters turnout passes on without reading (`extra`, an Anthropic client's own fields)
and the models the client excluded. Whether it streams is not part of it: a stored answer
serves a stream and a whole answer alike.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from turnout.model import Request
from turnout.routing import Plan

_FORMAT = b"turnout-cache-1"  # bumped when the key's material or the entry's encoding changes
SHARED_SCOPE = "*"  # the scope of a route whose answers are shared across API keys
ANONYMOUS_SCOPE = "-"  # requests without a key (auth off)


def route_tag(route: str) -> str:
    """A short fixed-alphabet name for a route in stored keys (route names may hold any
    character, and a clear finds a route's entries by this prefix)."""
    return hashlib.blake2b(route.encode(), digest_size=6).hexdigest()


def targets_fingerprint(plan: Plan) -> bytes:
    """The route's models as configured (name, provider, upstream model, in order) and its
    output schema: what a reload may change under the same route name."""
    material = [(t.name, t.provider.name, t.upstream_model) for t in plan.targets]
    return orjson.dumps([material, plan.output_schema], option=orjson.OPT_SORT_KEYS)


def _native_fields(request: Request) -> Any:
    """An Anthropic client's top-level fields turnout does not interpret (thinking, top_k...),
    which reach Anthropic upstreams: they decide the answer too. None for other dialects."""
    native = getattr(request, "native", None)
    return getattr(native, "fields", None)


def request_key(plan: Plan, request: Request, scope: str, dialect: str) -> str:
    """The hex digest naming this request's answer. Raises TypeError/orjson.JSONEncodeError
    for material that is not JSON (the request is then not cached)."""
    material = orjson.dumps(
        [
            plan.route,
            scope,
            dialect,
            request.messages,
            request.tools,
            request.tool_choice,
            request.response_format,
            request.temperature,
            request.top_p,
            request.max_tokens,
            request.stop,
            request.extra,
            _native_fields(request),
            sorted(request.exclude),  # x-turnout-exclude: the client ruled models out
        ],
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
    )
    digest = hashlib.blake2b(_FORMAT, digest_size=20)
    digest.update(targets_fingerprint(plan))
    digest.update(b"\x00")
    digest.update(material)
    return digest.hexdigest()
