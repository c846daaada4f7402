"""The chaos soak's verdicts: each failure classified against the schedule, the ledger matched
to the requests row by row, and the gateway's RSS over time."""

from __future__ import annotations

import sqlite3
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from soak_clients import Result
from soak_schedule import Phase, phases_between

EXAMPLES = 8  # failures shown per class


def classify(result: Result, phases: list[Phase], windows: list[tuple[float, float, str]]) -> str:
    """Why a failed request failed, from the schedule and the gateway's own down windows:
    - gateway-down: in a window where the gateway process was not serving (restart, a death)
    - no-target-healthy: some moment of its life had no healthy target for its route
    - recovering: in the recovery window after all-down (breakers closing)
    - committed-stream-broken: the upstream broke a stream after content reached the client
    - target-healthy: everything else; the figure that must be 0
    """
    for t0, t1, _why in windows:
        if result.t0 <= t1 and t0 <= result.t1 and result.state in ("not_reached", "no_response"):
            return "gateway-down"
    if result.state == "not_reached":
        return "target-healthy"  # refused while the gateway should have been listening
    route = result.route if result.route in ("chat", "slow") else None
    during = phases_between(phases, result.t0, result.t1)
    if route is not None:
        if any(not p.recovering and not p.healthy_targets(route) for p in during):
            return "no-target-healthy"
        if any(p.recovering for p in during):
            return "recovering"
    if result.content_seen and "stream failed after it started" in result.error:
        return "committed-stream-broken"
    return "target-healthy"


def failure_summary(
    results: list[Result], phases: list[Phase], windows: list[tuple[float, float, str]]
) -> dict[str, Any]:
    by_class: dict[str, list[Result]] = {}
    for r in results:
        if r.state in ("ok", "aborted"):
            continue
        by_class.setdefault(classify(r, phases, windows), []).append(r)
    return {
        name: {
            "count": len(items),
            "first_t_s": round(min(r.t0 for r in items), 2),
            "last_t_s": round(max(r.t0 for r in items), 2),
            "by_phase": dict(Counter(phases_between(phases, r.t0, r.t0)[0].name for r in items)),
            "by_kind": dict(Counter(r.kind for r in items)),
            # every one of the failures that count; a few of the others
            "examples": [
                r.as_dict() for r in items[: 200 if name == "target-healthy" else EXAMPLES]
            ],
        }
        for name, items in sorted(by_class.items())
    }


def read_ledger(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT id, route, dialect, stream, status, outcome, model, session, error FROM ledger"
        ).fetchall()
    return [dict(r) for r in rows]


def ledger_check(results: list[Result], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Exactly one row per request that reached the gateway.

    Matched by request id (x-turnout-request-id, when the client got headers), else by the
    request's session tag (written into the row's `session`). A request that broke before any
    response (`no_response`) reached the gateway if and only if a row carries its tag."""
    by_id = {r["id"]: r for r in rows}
    tags = Counter(r["session"] for r in rows if r["session"])
    used: set[str] = set()
    missing, doubled, no_response_reached = [], [], 0
    outcomes: dict[str, Counter[str]] = {}
    reached = 0
    by_tag = {r["session"]: r for r in rows if r["session"]}
    for res in results:
        if res.state == "not_reached":
            continue
        row = by_id.get(res.request_id) if res.request_id else None
        row = row or by_tag.get(res.tag)
        if tags.get(res.tag, 0) > 1:
            doubled.append(res.tag)
        if row is None:
            if res.state != "no_response":
                missing.append(res.as_dict())
            continue
        if res.state == "no_response":
            no_response_reached += 1
        reached += 1
        used.add(row["id"])
        outcomes.setdefault(res.kind, Counter())[f"{row['status']} {row['outcome']}"] += 1
    orphans = [r for r in rows if r["id"] not in used]
    return {
        "rows": len(rows),
        "requests_reached": reached + len(missing),
        "rows_matched": len(used),
        "requests_without_row": len(missing),
        "rows_without_request": len(orphans),
        "requests_with_two_rows": len(doubled),
        "no_response_requests_with_row": no_response_reached,
        "exactly_one_row_each": not missing and not orphans and not doubled,
        "row_status_outcome_by_kind": {k: dict(v) for k, v in sorted(outcomes.items())},
        "missing_examples": missing[:EXAMPLES],
        "orphan_examples": orphans[:EXAMPLES],
    }


def rss_summary(samples: list[tuple[float, int, float]], warmup_s: float) -> dict[str, Any]:
    """RSS after warm-up of the gateway process that ran to the end (a restart starts a new
    process and a new warm-up): min, max and the least-squares slope in MB per minute."""
    if not samples:
        return {}
    last_pid = samples[-1][1]
    own = [(t, mb) for t, pid, mb in samples if pid == last_pid]
    born = own[0][0]
    after = [(t, mb) for t, mb in own if t - born >= warmup_s]
    summary: dict[str, Any] = {
        "pid": last_pid,
        "process_started_s": round(born, 1),
        "warmup_s": warmup_s,
        "samples_after_warmup": len(after),
    }
    if len(after) >= 2:
        ts, mbs = [t for t, _ in after], [mb for _, mb in after]
        slope = statistics.linear_regression(ts, mbs).slope * 60
        summary |= {
            "min_mb": round(min(mbs), 1),
            "max_mb": round(max(mbs), 1),
            "first_mb": round(mbs[0], 1),
            "last_mb": round(mbs[-1], 1),
            "slope_mb_per_min": round(slope, 3),
            "span_s": round(ts[-1] - ts[0], 1),
        }
        half = after[len(after) // 2 :]  # growth that stops (warm-up) vs growth that goes on
        if len(half) >= 2:
            slope = statistics.linear_regression(*zip(*half, strict=True)).slope * 60
            summary["slope_last_half_mb_per_min"] = round(slope, 3)
    return summary
