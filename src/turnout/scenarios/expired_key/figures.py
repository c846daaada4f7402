"""expired-key's own figures: what the expired key cost against a healthy day (the same
requests, the same token counts from the ledger, all served by Scout at its price), and how
soon the alert came."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from turnout.accounting.cost import cost_usd
from turnout.model import Usage

if TYPE_CHECKING:  # the runner loads the whole gateway: `turnout scenario list` needs none of it
    from turnout.scenarios.runner import Run

PRIMARY = "scout"
CHANGE = "scout key expires"


def figures(run: Run) -> dict[str, Any]:
    price = run.config.models[PRIMARY].price
    assert price is not None, "config.yaml prices scout"
    spend = sum(r.cost_usd for r in run.rows)
    healthy = 0.0
    for r in run.rows:
        healthy += cost_usd(price, Usage(r.prompt_tokens, r.completion_tokens, r.cached_tokens))
    expired_at = run.changes.get(CHANGE)
    out: dict[str, Any] = {
        "healthy_day_usd": round(healthy, 6),
        "extra_cost_usd": round(spend - healthy, 6),
        "extra_cost_ratio": round(spend / healthy, 2) if healthy else None,
    }
    if expired_at is not None:
        after = [r for r in run.rows if r.started_at - run.start >= expired_at]
        first = min((r.started_at - run.start for r in after), default=None)
        alert = min(
            (a["at"] for a in run.alerts if a["rule"] == "misconfigured" and a["firing"]),
            default=None,
        )
        out["requests_after_expiry"] = len(after)
        out["first_request_after_expiry_s"] = _since(first, expired_at)
        out["alert_after_expiry_s"] = _since(alert, expired_at)
    out["headline"] = (
        f"the expired key cost USD {spend - healthy:.4f} extra:"
        f" USD {spend:.4f} instead of USD {healthy:.4f}"
        f" ({out['extra_cost_ratio']}x the healthy day)"
    )
    return out


def _since(at: float | None, origin: float) -> float | None:
    return None if at is None else round(at - origin, 1)
