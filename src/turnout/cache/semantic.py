"""The semantic cache's Index: a request whose last user message is similar enough to an
earlier request's gets that request's answer, when everything else is the same.

Only the last user message is compared, and only within its conversation context: the
bucket of vectors is named by the hash of everything else that decides the answer (the
route and its models, the key's scope, the client's format, the earlier messages, tools,
tool choice, response format, sampling parameters, max tokens; cache/key.py), so a hit never
crosses routes, keys, system prompts or parameters. The message is embedded by the route's
`embed_route` (the gateway's own embeddings route, cache.embed); when that fails the request
is still looked up and stored by its exact key, never refused because of the cache."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from turnout.cache.index import ExactIndex, Found
from turnout.cache.key import request_key, route_tag
from turnout.cache.vectors import Vectors, pack
from turnout.config.cache import CacheConfig
from turnout.model import Request
from turnout.routing import Plan

log = logging.getLogger("turnout.cache")

# (embeddings route, text, API key id) -> the text's vector; raises when it cannot
Embed = Callable[[str, str, str | None], Awaitable[list[float]]]

_WARN_EVERY = 60.0  # seconds between two warnings of a failing embeddings route


def last_user_text(request: Request) -> str | None:
    """The text of the last message when it is the user's and all text; None otherwise (a
    tool result, an image: such requests are cached by their exact key only)."""
    if not request.messages:
        return None
    last = request.messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    content: Any = last.get("content")
    if isinstance(content, str):
        return content or None
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                return None
            texts.append(str(part.get("text", "")))
        return "\n".join(texts) or None
    return None


def context_bucket(plan: Plan, request: Request, scope: str, dialect: str) -> str:
    """`{route tag}:{digest}` of everything but the last message (the route tag first, so a
    route's clear finds its buckets)."""
    context = replace(request, messages=request.messages[:-1])
    return f"{route_tag(plan.route)}:{request_key(plan, context, scope, dialect)}"


class SemanticIndex(ExactIndex):
    def __init__(self, config: CacheConfig, vectors: Vectors, embed: Embed) -> None:
        assert config.embed_route is not None  # (CacheConfig's validator)
        self.config = config
        self.embed_route = config.embed_route
        self.vectors = vectors
        self.embed = embed
        self._warned_at = -_WARN_EVERY

    async def nearest(
        self,
        exact: Found,
        plan: Plan,
        request: Request,
        scope: str,
        dialect: str,
        key_id: str | None,
        search: bool = True,
    ) -> tuple[Found | None, Found]:
        text = last_user_text(request)
        if text is None:
            return None, exact
        try:
            vector = pack(await self.embed(self.embed_route, text, key_id))
        except Exception as exc:  # noqa: BLE001 - any failure: the exact key still serves
            self._warn(plan.route, exc)
            return None, exact
        if not vector:
            return None, exact
        bucket = context_bucket(plan, request, scope, dialect)
        store = replace(exact, vector=vector, bucket=bucket)
        if not search:
            return None, store
        match = await self.vectors.nearest(bucket, vector)
        if match is None or match.similarity < self.config.threshold or match.key == exact.key:
            return None, store  # (its own key: the exact lookup just found nothing there)
        return Found(match.key, min(1.0, match.similarity)), store

    async def added(self, found: Found, plan: Plan, request: Request, scope: str) -> None:
        if found.vector:
            config = self.config
            await self.vectors.add(
                found.bucket, found.key, found.vector, config.ttl, config.max_vectors
            )

    def _warn(self, route: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning(
                "semantic cache of route %s: embeddings route %s failed (%s): requests are"
                " looked up by their exact key only",
                route,
                self.embed_route,
                type(exc).__name__,
            )
