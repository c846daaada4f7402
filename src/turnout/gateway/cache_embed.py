"""The semantic cache's query embeddings, through the gateway's own embeddings route.

Each one is a request of the gateway to itself: admitted as an anonymous request (route
budgets apply; the client's key needs no rights to the embeddings route, which the route's
config chose), failed over across the route's models, priced, and recorded as its own ledger
row (attributed to the client's key id), so what the cache spends on embeddings is in the
ledger beside what it saves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from turnout.gateway.embeddings import EmbeddingAnswer
from turnout.gateway.exchange import Exchange
from turnout.model.embeddings import EmbeddingRequest
from turnout.model.errors import GatewayError

_DIALECT = "openai"  # the ledger's dialect of these rows: the embeddings API is OpenAI's


class _Internal:
    """The 'connection' of a request the gateway makes to itself: never hangs up."""

    def connected(self) -> bool:
        return True

    def absorb_cut(self) -> bool:
        return False


_INTERNAL = _Internal()


async def embed_for_cache(
    arrive: Callable[[str, _Internal], Exchange],
    embed: Callable[[EmbeddingRequest, Exchange], Awaitable[EmbeddingAnswer]],
    route: str,
    text: str,
    key_id: str | None,
) -> list[float]:
    """`text`'s vector from embeddings route `route`; raises as `Gateway.embed` does, after
    recording the failure."""
    exchange = arrive(_DIALECT, _INTERNAL)
    exchange.row.key_id = key_id
    try:
        answer = await embed(EmbeddingRequest(model=route, inputs=[text]), exchange)
    except GatewayError as exc:
        raise exchange.refuse(exc) from None
    except BaseException as exc:
        exchange.row.error = f"semantic cache embedding: {type(exc).__name__}"
        exchange.finish()
        raise
    vectors = answer.embedded.result.vectors
    if not vectors:
        raise ValueError("the embeddings route answered without a vector")
    return vectors[0]
