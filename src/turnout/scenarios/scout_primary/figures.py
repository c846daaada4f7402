"""scout-primary's own figures: the savings against Haiku-only (the route's baseline: the same
tokens at Haiku's price), apart for the requests the product routed and for the long
documents, and where they come from: at a flat USD 0.20 against Haiku's 1 in and 5 out, Scout
saves 80% of a prompt token's price and 96% of an answer token's, so the mix decides."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from turnout.sinks.exported import fell_back

if TYPE_CHECKING:  # the runner loads the whole gateway: `turnout scenario list` needs none of it
    from turnout.accounting.records import LedgerRow
    from turnout.scenarios.runner import Run

FORCED = "haiku"  # traffic.py FORCED: requests the product sends to Haiku itself
DOCUMENT = 5_000  # prompt tokens from which a request is one of the long documents


def figures(run: Run) -> dict[str, Any]:
    rows = run.rows
    routed = [r for r in rows if r.route != FORCED]
    documents = [r for r in rows if r.prompt_tokens >= DOCUMENT]
    ok = sum(r.status == 200 and r.outcome == "ok" for r in rows)
    prompt = sum(r.prompt_tokens for r in rows)
    answer = sum(r.completion_tokens for r in rows)
    spend = sum(r.cost_usd for r in rows)
    baseline = sum(r.baseline_cost_usd for r in rows)
    out: dict[str, Any] = {
        "success_rate": round((len(rows) - len(run.failures)) / max(len(rows), 1), 4),
        "answered_ok": ok,
        "forced_requests": len(rows) - len(routed),
        "fell_back_requests": sum(fell_back(r) for r in routed),
        "prompt_tokens": prompt,
        "answer_tokens": answer,
        "routed_savings_share": _share(routed),
        "document_requests": len(documents),
        "document_savings_share": _share(documents),
    }
    saved = (baseline - spend) / baseline if baseline else 0.0
    out["headline"] = (
        f"USD {spend:.4f} instead of USD {baseline:.4f} on Haiku alone:"
        f" {saved:.1%} saved with {len(run.failures)} failed requests;"
        f" {out['fell_back_requests']} fell back to Haiku, {out['forced_requests']} were sent"
        " to it by the product"
    )
    return out


def _share(rows: list[LedgerRow]) -> float | None:
    """Savings against the baseline as a share of it, for these rows."""
    baseline = sum(r.baseline_cost_usd for r in rows)
    spend = sum(r.cost_usd for r in rows)
    return round((baseline - spend) / baseline, 4) if baseline else None
