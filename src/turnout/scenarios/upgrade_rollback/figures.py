"""upgrade-rollback's own figures: whether every pipeline run completed, when and why the
gateway rolled the candidate back and how many of its requests that took, what the candidate
answered (and where stage 4 went instead), and what the day cost per run."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from turnout.scenarios.upgrade_rollback.traffic import JSON_STAGE, RUNS

if TYPE_CHECKING:  # the runner loads the whole gateway: `turnout scenario list` needs none of it
    from turnout.scenarios.runner import Run

CANDIDATE = "llama-33-70b"
CURRENT = "llama-31-70b"
_RUN_OF = re.compile(r"\(run-(\d+) stage-\d+\)")  # how a failure line names its call


def figures(run: Run) -> dict[str, Any]:
    failed_runs = {m.group(1) for line in run.failures if (m := _RUN_OF.search(line))}
    moves = [e for e in run.events if e["type"] == "RolloutChanged"]
    rollback = next((e for e in moves if e["action"] == "rolled_back"), None)
    # every request the candidate took part in: answered, or tried and failed over
    tried = [r for r in run.rows if r.model == CANDIDATE or _tried(r, CANDIDATE)]
    json_rows = [r for r in run.rows if r.output_check is not None]
    out: dict[str, Any] = {
        "pipeline_runs": RUNS,
        "runs_completed": RUNS - len(failed_runs),
        "rolled_back": int(rollback is not None),
        "candidate_requests": len(tried),
        "candidate_answers": sum(r.model == CANDIDATE for r in run.rows),
        f"stage_{JSON_STAGE}_failed_over": sum(_tried(r, CANDIDATE) for r in json_rows),
        f"stage_{JSON_STAGE}_answered_by": _count(r.model for r in json_rows),
    }
    if rollback is not None:
        observed, limit = rollback["observed"], rollback["limit"]
        judged = rollback["figures"]
        after = [r for r in tried if r.started_at - run.start > rollback["at"]]
        out |= {
            "rolled_back_at": _clock(rollback["at"]),
            "rollback_objective": f"{rollback['objective']} {observed:.3f} > {limit:g}",
            "candidate_requests_to_rollback": judged["candidate"]["requests"],
            "candidate_requests_after_rollback": len(after),
            # the gateway's own timings on the judged window (real ms): the candidate was the
            # faster model, so only its errors stopped it
            "candidate_ttft_p95_ms": judged["candidate"]["ttft_p95_ms"],
            "current_ttft_p95_ms": judged["primary"]["ttft_p95_ms"],
        }
    spend = sum(r.cost_usd for r in run.rows)
    out["spend_per_run_usd"] = round(spend / RUNS, 6)
    if rollback is None:
        outcome = f"{CANDIDATE} was never rolled back"
    else:
        outcome = (
            f"the gateway rolled {CANDIDATE} back at {out['rolled_back_at']} on"
            f" {out['rollback_objective']}, after {out['candidate_requests_to_rollback']}"
            " of its requests"
        )
    out["headline"] = f"{out['runs_completed']} of {RUNS} pipeline runs completed; {outcome}"
    return out


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _tried(row: Any, model: str) -> bool:
    return any(a.get("model", "").split("@")[0] == model for a in row.attempts)


def _count(models: Any) -> str:
    counts: dict[str, int] = {}
    for model in models:
        counts[model or "none"] = counts.get(model or "none", 0) + 1
    return ", ".join(f"{m} {n}" for m, n in sorted(counts.items(), key=lambda kv: -kv[1]))
