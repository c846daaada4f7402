"""fallback-tier's own figures: availability (the requests the client got an answer to), where
the answers came from (the primary, each Llama region, the queue, the stale store), and the
fallback events as the sinks published them: the JSONL file's, and those of them found on
the Redis stream when Redis is reachable."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # the runner loads the whole gateway: `turnout scenario list` needs none of it
    from turnout.accounting.records import LedgerRow
    from turnout.scenarios.runner import Run

FALLBACK_MODEL = "llama"
REDIS_URL = "redis://127.0.0.1:6379/0"  # config.yaml's stream sink
STREAM = "turnout:scenario:fallback-tier"
_PAGE = 5000  # stream entries read at a time


def figures(run: Run) -> dict[str, Any]:
    rows = run.rows
    answered = len(rows) - len(run.failures)
    regions = Counter(r.provider for r in rows if r.model == FALLBACK_MODEL and r.status == 200)
    published = run.sink_events.get("file", [])
    on_stream = _on_stream({e["request_id"] for e in published})
    out: dict[str, Any] = {
        "availability": round(answered / max(len(rows), 1), 4),
        "primary_answers": sum(r.model == "flash" and r.outcome == "ok" for r in rows),
        "regions_served": ", ".join(f"{p} {n}" for p, n in regions.most_common()) or "-",
        "regions_serving": len(regions),
        "queued_answers": sum(_queued(r) for r in rows),
        "stale_answers": sum(r.outcome == "stale" for r in rows),
        "fallback_events_published": len(published),
        # None: Redis was not reachable (the JSONL file has them all the same)
        "fallback_events_on_stream": on_stream,
    }
    out["headline"] = (
        f"{out['availability']:.2%} of {len(rows)} requests answered: flash"
        f" {out['primary_answers']}, the Llama tier {sum(regions.values())}"
        f" ({len(regions)} regions), of those {out['queued_answers']} after a wait in the queue,"
        f" and {out['stale_answers']} stored answers"
    )
    return out


def _queued(row: LedgerRow) -> bool:
    """Answered by a target that had already been skipped or failed for this request: the
    failover went round again, which only the queue does (one try per target otherwise)."""
    if row.outcome != "ok" or row.model is None:
        return False
    served = row.model if row.model != FALLBACK_MODEL else f"{row.model}@{row.provider}"
    return any(a.get("model") == served for a in row.attempts)


def _on_stream(ids: set[str]) -> int | None:
    """How many of these events are on the Redis stream (other runs share it: counted by
    their request ids); None when Redis cannot be reached."""
    import orjson
    import redis

    try:
        client = redis.Redis.from_url(
            REDIS_URL, socket_connect_timeout=1, socket_timeout=5, decode_responses=True
        )
        found, last = 0, "-"
        while True:  # in pages, oldest first
            page = cast(
                "list[tuple[str, dict[str, str]]]",
                client.xrange(STREAM, min=last, max="+", count=_PAGE),
            )
            for _, fields in page:
                found += orjson.loads(fields["event"]).get("request_id") in ids
            if len(page) < _PAGE:
                return found
            last = "(" + page[-1][0]  # exclusive: after the page's last entry
    except redis.RedisError:
        return None
