"""split-limits' own figures: whether every use of the feature completed both steps (the
ledger's rows paired by their session), how much of each model's rate limit was used (requests
per window of the sim's own fixed windows, against the limit), the 429s the upstream returned
(attempts that met one) and the requests pacing sent elsewhere before any 429. And what the
app's old wiring (plans on gpt-4.1-mini only, coaching on gpt-4.1 only) would have done with
the same requests: each window's coaching beyond gpt-4.1's limit is a use left half-way."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the runner loads the whole gateway: `turnout scenario list` needs none of it
    from turnout.accounting.records import LedgerRow
    from turnout.scenarios.runner import Run

PLAN, COACHING = "plan", "coaching"
PROVIDER = "openai"


def figures(run: Run) -> dict[str, Any]:
    rows = run.rows
    uses: dict[str, dict[str, LedgerRow]] = defaultdict(dict)
    for row in rows:
        if row.session is not None:
            uses[row.session][row.route] = row
    complete = sum(all(_ok(use.get(step)) for step in (PLAN, COACHING)) for use in uses.values())
    half_way = sum(_ok(use.get(PLAN)) and not _ok(use.get(COACHING)) for use in uses.values())
    reasons = [str(a.get("reason", "")) for r in rows for a in r.attempts]
    out: dict[str, Any] = {
        "uses": len(uses),
        "uses_completed": complete,
        "uses_failed_half_way": half_way,
        "upstream_429s": sum(reason == "rate_limited(429)" for reason in reasons),
        "paced_elsewhere": sum(reason.startswith("rate_limited(paced") for reason in reasons),
        "client_429s": sum(r.status == 429 for r in rows),
    }
    for name in run.config.models:
        out.update(_utilisation(run, name))
    coach = _coach(run)
    if coach is not None:
        out["old_wiring_uses_failed_half_way"] = _beyond_limit(run, coach, COACHING)
    by_route = Counter((r.route, r.model) for r in rows if _ok(r))
    for (route, model), count in sorted(by_route.items(), key=lambda item: str(item[0])):
        out[f"{route}_served_by_{model}"] = count
    out["headline"] = (
        f"{complete} of {len(uses)} uses completed both steps, {half_way} failed half-way;"
        f" {out['upstream_429s']} upstream 429s, {out['client_429s']} reached a client"
    )
    return out


def _ok(row: LedgerRow | None) -> bool:
    return row is not None and row.status == 200 and row.outcome == "ok"


def _limit(run: Run, model: str) -> tuple[int, float] | None:
    """The model's enforced limit and window (simulated seconds), from its sim behaviour."""
    upstream = run.config.models[model].model or model
    section = run.scenario.config_data()["providers"][PROVIDER]["sim"].get(upstream) or {}
    limit = section.get("ratelimit_limit")
    if limit is None:
        return None
    from turnout.sim.schema import SimBehaviour  # (the gateway is loaded by the run itself)

    return int(limit), SimBehaviour.model_validate(section).ratelimit_reset


def _windows(run: Run, rows: list[LedgerRow], span: float) -> Counter[float]:
    """Requests per fixed window of `span` seconds of the epoch, as the sim counts them."""
    return Counter(r.started_at - r.started_at % span for r in rows)


def _utilisation(run: Run, model: str) -> dict[str, Any]:
    known = _limit(run, model)
    if known is None:
        return {}
    limit, span = known
    served = [r for r in run.rows if r.model == model and _ok(r)]
    counts = _windows(run, served, span)
    first = run.start - run.start % span
    windows = int((run.start + float(run.scenario.traffic.DURATION) - first) // span) + 1
    return {
        f"{model}_limit_per_window": limit,
        # by when the gateway received them: a request queued for the next window counts in
        # the one it arrived in, so this can pass the limit the sim enforced by a request or two
        f"{model}_busiest_window_received": max(counts.values(), default=0),
        f"{model}_capacity_used": round(len(served) / (windows * limit), 4),
    }


def _coach(run: Run) -> str | None:
    """The model the coaching route prefers (its first target)."""
    targets = run.config.routes[COACHING].targets if COACHING in run.config.routes else []
    return targets[0] if targets else None


def _beyond_limit(run: Run, model: str, route: str) -> int:
    """The route's requests each window beyond `model`'s limit: what `model` alone refuses."""
    known = _limit(run, model)
    if known is None:
        return 0
    limit, span = known
    counts = _windows(run, [r for r in run.rows if r.route == route], span)
    return sum(max(count - limit, 0) for count in counts.values())
