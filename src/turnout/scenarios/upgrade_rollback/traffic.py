"""upgrade-rollback's traffic: a research pipeline of 13 stages run 150 times over a working
day (09:00 to 17:00, busiest around midday). Each run is one workflow: its stages go out a
simulated minute apart with the run's own `user`, which keeps the run on one model of the
canary. Stages 1-3 and 5-13 are free text (streamed); stage 4 asks for a 40-field JSON object
with response_format json_schema (a whole answer, which the client parses).

No upstream changes during the day: the new model is broken from the start (config.yaml), and
the canary is what finds out."""

from __future__ import annotations

import random
from typing import Any

from turnout.scenarios.traffic import Call, spread_over

STORY = "A newer Llama breaks stage 4's 40-field JSON: the canary rolls it back, no run fails"
OPENS, CLOSES = 9 * 3600, 17 * 3600
DURATION = CLOSES + 3600.0  # the report covers the day up to an hour after the last run starts
RUNS = 150
STAGES = 13
JSON_STAGE = 4
STAGE_GAP = 60.0  # simulated seconds between a run's stages

FIELDS = [f"field_{i:02d}" for i in range(40)]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {name: {"type": "string"} for name in FIELDS},
    "required": FIELDS,
    "additionalProperties": False,
}
REPORT_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "research_summary", "schema": SCHEMA, "strict": True},
}

CHANGES: list[Any] = []


def tag(run: int, stage: int) -> str:
    """A call's tag, also how a client-visible failure names its run (figures.py)."""
    return f"run-{run} stage-{stage}"


def calls(rng: random.Random) -> list[Call]:
    out = []
    for run, start in enumerate(spread_over(RUNS, rng, start=OPENS, end=CLOSES)):
        user = {"user": f"pipeline-run-{run}"}  # the canary's stickiness key: one run, one model
        for stage in range(1, STAGES + 1):
            at = start + (stage - 1) * STAGE_GAP
            if stage == JSON_STAGE:
                body = {**user, "response_format": REPORT_FORMAT}
                out.append(Call(at, "research", 1_500, 2_000, tag=tag(run, stage), body=body))
                continue
            out.append(
                Call(
                    at,
                    "research",
                    prompt_tokens=rng.randint(800, 4_000),  # sources and earlier stages' notes
                    max_tokens=rng.randint(200, 700),
                    stream=True,
                    tag=tag(run, stage),
                    body=user,
                )
            )
    return sorted(out, key=lambda call: call.at)
