"""A cache hit as the core's Answer: the stored response for a whole answer, or the same
stored response replayed through the Relay for a stream, so the client's own StreamEncoder
gives it exactly the shape of a live stream. Its ledger row: the model that first gave the
answer, no upstream tokens or cost, and what the answer cost then (`cache_saved_usd`)."""

from __future__ import annotations

from dataclasses import replace

from turnout.cache import Lookup
from turnout.execute import Relay, RelayEnd, Stream
from turnout.execute.accumulate import replay
from turnout.gateway.answer import Answer
from turnout.gateway.exchange import Exchange
from turnout.model import Request, Response, UpstreamError, Usage


def cache_headers(lookup: Lookup | None) -> dict[str, str]:
    """x-turnout-cache on every answer of a route with a cache (`similar(0.97)` for a
    semantic hit, with the exact figure in x-turnout-cache-similarity); a hit's age and
    savings."""
    if lookup is None:
        return {}
    headers = {"x-turnout-cache": lookup.verdict}
    entry, similarity = lookup.entry, lookup.similarity
    if entry is not None:
        headers["age"] = str(int(entry.age))
        headers["x-turnout-cache-saved-usd"] = f"{entry.cost_usd:.8f}"
    if similarity is not None:
        # floored: the header never shows a similarity above the one found
        headers["x-turnout-cache"] = f"{lookup.verdict}({int(similarity * 100) / 100:.2f})"
        headers["x-turnout-cache-similarity"] = f"{similarity:.4f}"
    return headers


def serve_hit(exchange: Exchange, request: Request, lookup: Lookup) -> Answer:
    entry, plan, row = lookup.entry, lookup.plan, exchange.row
    assert entry is not None
    # the model that answered is among the route's targets (the key holds them all), or was
    # its rollout candidate
    known = (*plan.targets, plan.candidate) if plan.candidate is not None else plan.targets
    target = next((t for t in known if t.name == entry.model), None)
    row.model = entry.model
    row.provider = target.provider.name if target is not None else None
    row.cache, row.cache_saved_usd = lookup.verdict, entry.cost_usd  # hit | similar
    row.cache_similarity = lookup.similarity
    row.cost_usd = row.baseline_cost_usd = 0.0  # nothing spent upstream, nothing to route
    response = _served(entry.response)
    version, headers = exchange.runtime.version, cache_headers(lookup)
    if not request.stream:
        row.status, row.outcome = 200, "ok"
        exchange.finish()
        return Answer(
            row.id,
            plan.route,
            entry.model,
            0,
            [],
            response=response,
            cost_usd=0.0,
            config=version,
            extra_headers=headers,
        )

    def settle(usage: Usage) -> None:
        usage.cost = 0.0  # the closing events carry turnout's cost: none

    def on_end(end: RelayEnd) -> None:
        row.status, row.outcome, row.error = 200, end.outcome, end.error
        if end.first_token_at is not None:
            row.ttft_ms = (end.first_token_at - row.started_at) * 1000
        exchange.finish(client_left_first=not end.opened)

    stream = Stream(target or plan.targets[0], [], 0, replay(response))
    relay = Relay(stream, _no_continuation, settle, on_end)
    return Answer(
        row.id,
        plan.route,
        entry.model,
        0,
        [],
        relay=relay,
        cost_usd=0.0,
        config=version,
        extra_headers=headers,
    )


def _served(response: Response) -> Response:
    """A copy for this client (the encoders and the relay set the usage's cost on it)."""
    return replace(response, usage=replace(response.usage, cost=0.0))


async def _no_continuation(stream: Stream, error: UpstreamError) -> Stream | None:
    return None  # a replayed answer has no upstream to break
