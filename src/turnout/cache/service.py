"""The response cache a gateway holds: per-route rules from the config, one backend shared
by every route (memory, or Redis with the state backend), lookups and stores.

The core asks `rules.get(route)` for every request (the whole cost on a route without a
cache); for a route with one it calls `lookup` before selecting a target, and `store` once a
miss has been answered well. A store runs in the background: the client never waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

import orjson

from turnout import clock
from turnout.cache.backends import Backend, MemoryBackend
from turnout.cache.control import NONE, Directives
from turnout.cache.entry import Entry, decode, encode
from turnout.cache.index import INDEXES, Found, Index
from turnout.cache.key import ANONYMOUS_SCOPE, SHARED_SCOPE, route_tag
from turnout.cache.semantic import Embed, SemanticIndex
from turnout.cache.shelves import MemoryVectors
from turnout.cache.vectors import Vectors
from turnout.config.cache import CacheConfig
from turnout.config.schema import Config, StateConfig
from turnout.model import Request, Response
from turnout.routing import Plan

log = logging.getLogger("turnout.cache")

# the ledger's `cache` column and x-turnout-cache: `similar` is a semantic hit (a similar
# earlier prompt's answer), `hit` an identical request's
HIT, SIMILAR, MISS, BYPASS = "hit", "similar", "miss", "bypass"


@dataclass(slots=True, frozen=True)
class Rule:
    """A route's cache settings, as the config says, with what they imply, built once."""

    route: str
    config: CacheConfig
    index: Index

    def sampled(self, request: Request) -> bool:
        """A fresh sample was asked for (temperature > 0) and the route does not serve
        sampled answers again. An unset temperature is the route's default: cached."""
        t = request.temperature
        return t is not None and t > 0 and not self.config.cache_sampled


@dataclass(slots=True)
class Lookup:
    """One request's dealings with the cache: the verdict, the entry on a hit, and where a
    miss's answer goes (None: it is not stored)."""

    verdict: str  # hit | miss | bypass
    rule: Rule
    plan: Plan
    request: Request
    scope: str
    found: Found | None = None
    entry: Entry | None = None
    store_to: Found | None = None

    @property
    def stores(self) -> bool:
        return self.store_to is not None

    @property
    def similarity(self) -> float | None:
        """A semantic hit's similarity with the earlier prompt; None otherwise."""
        found = self.found
        return found.similarity if self.entry is not None and found is not None else None


class ResponseCache:
    def __init__(self, state: StateConfig) -> None:
        self.rules: dict[str, Rule] = {}
        self.backend: Backend = _backend(state)
        self.vectors: Vectors = _vectors(state, self.backend)  # the semantic mode's
        # the semantic mode's embeddings, through the gateway's own route (the gateway sets it)
        self.embed: Embed | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self.counts = {HIT: 0, SIMILAR: 0, MISS: 0, BYPASS: 0, "stored": 0, "too_large": 0}

    def configure(self, config: Config) -> None:
        """The rules of `config`'s routes (at start and on each reload). Answers stored under
        the previous config stay where they are: their keys hold the routes' models, so a
        route whose models changed never finds them, and they expire."""
        self.rules = {
            name: Rule(name, route.cache, self._index(route.cache))
            for name, route in config.routes.items()
            if route.cache is not None
        }

    def _index(self, config: CacheConfig) -> Index:
        if config.mode == "semantic":
            return SemanticIndex(config, self.vectors, self._embedding)
        return INDEXES[config.mode]

    async def _embedding(self, route: str, text: str, key_id: str | None) -> list[float]:
        if self.embed is None:
            raise RuntimeError("no embeddings for the response cache")
        return await self.embed(route, text, key_id)

    async def start(self) -> None:
        await self.backend.start()

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self.backend.close()

    # --- one request ----------------------------------------------------------------------------

    async def lookup(
        self,
        rule: Rule,
        plan: Plan,
        request: Request,
        key_id: str | None,
        dialect: str,
        control: Directives = NONE,
    ) -> Lookup:
        """The stored answer to this request (verdict hit), or what to do with the live one."""
        scope = SHARED_SCOPE if rule.config.share_across_keys else key_id or ANONYMOUS_SCOPE
        lookup = Lookup(MISS, rule, plan, request, scope)
        if rule.sampled(request):
            lookup.verdict = BYPASS
            self.counts[BYPASS] += 1
            return lookup
        try:
            found = await rule.index.find(plan, request, scope, dialect)
        except (TypeError, ValueError, orjson.JSONEncodeError):
            lookup.verdict = BYPASS  # material that is not JSON: not cacheable
            self.counts[BYPASS] += 1
            return lookup
        lookup.found = found
        if control.no_cache:
            lookup.verdict = BYPASS
            self.counts[BYPASS] += 1
            if not control.no_store:  # the fresh answer is stored (and indexed)
                _, lookup.store_to = await rule.index.nearest(
                    found, plan, request, scope, dialect, key_id, search=False
                )
            return lookup
        raw = await self.backend.get(found.key)
        entry = decode(raw) if raw is not None else None
        store_to = found
        if entry is None:  # (exact mode: nothing more to try)
            near, store_to = await rule.index.nearest(found, plan, request, scope, dialect, key_id)
            if near is not None:
                raw = await self.backend.get(near.key)
                entry = decode(raw) if raw is not None else None
                if entry is not None:
                    lookup.verdict, lookup.found = SIMILAR, near
        if entry is not None:
            lookup.entry = entry
            if lookup.verdict == MISS:
                lookup.verdict = HIT
        else:
            lookup.store_to = None if control.no_store else store_to
        self.counts[lookup.verdict] += 1
        return lookup

    def store(self, lookup: Lookup, response: Response, model: str, cost_usd: float) -> None:
        """Keep a miss's good answer for the route's TTL (in the background)."""
        found = lookup.store_to
        if found is None or response.raw is not None:
            return  # not wanted, or an undecoded pass-through body (core prevents it)
        lookup.store_to = None  # once
        value = encode(Entry(_without_cost(response), model, cost_usd, clock.now()))
        config = lookup.rule.config
        if len(value) > config.max_entry_bytes:
            self.counts["too_large"] += 1
            return
        task = asyncio.get_running_loop().create_task(
            self._write(found, value, config.ttl, lookup), name="cache-store"
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, found: Found, value: bytes, ttl: float, lookup: Lookup) -> None:
        try:
            await self.backend.set(found.key, value, ttl)
            await lookup.rule.index.added(found, lookup.plan, lookup.request, lookup.scope)
            self.counts["stored"] += 1
        except Exception:  # a background write must never take anything else down
            log.exception("response cache: storing an answer of route %s failed", lookup.plan.route)

    # --- admin -------------------------------------------------------------------------------

    async def clear(self, route: str) -> int:
        """Forget every stored answer of `route` (every key scope), and its semantic
        vectors; how many answers there were."""
        tag = route_tag(route)
        await self.vectors.clear(tag)
        return await self.backend.clear(tag)

    def stats(self) -> dict[str, object]:
        return {
            "backend": "redis" if not isinstance(self.backend, MemoryBackend) else "memory",
            "shared": self.backend.shared,
            **self.counts,
            **self.backend.stats(),
        }


def _without_cost(response: Response) -> Response:
    """The answer as stored: turnout's cost figure is the live request's, not a hit's."""
    usage = response.usage
    if usage.cost is None:
        return response
    return replace(response, usage=replace(usage, cost=None))


def _vectors(state: StateConfig, backend: Backend) -> Vectors:
    """The semantic cache's vectors: beside the answers (in Redis with them, or here)."""
    if state.backend == "redis":
        from turnout.cache.redis import RedisBackend, RedisVectors

        assert isinstance(backend, RedisBackend)
        return RedisVectors(backend, state.prefix)
    return MemoryVectors()


def _backend(state: StateConfig) -> Backend:
    if state.backend == "redis":
        from turnout.cache.redis import RedisBackend

        return RedisBackend(state.url, state.prefix)
    return MemoryBackend()
