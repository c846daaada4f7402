"""split-limits' traffic: forty minutes of a coaching feature at its lunchtime peak. Each use
is a pair: a plan (route `plan`) and, once the user has read it, the coaching (route
`coaching`), both streamed to the user and both carrying the user's
session (`x-turnout-session`), so the ledger pairs them. Demand for coaching climbs past
gpt-4.1's 20 requests a minute while gpt-4.1-mini, planning, has room to spare. Nothing
changes upstream: the two rate limits (config.yaml) are the whole story."""

from __future__ import annotations

import random

from turnout.scenarios.traffic import Call, Change, spread_over

STORY = "plan then coaching on two models' rate limits: the feature never fails half-way"
DURATION = 40 * 60.0  # simulated seconds: the lunchtime peak
# a minute's rate-limit window is 1 s of real time: slow enough that a request's real latency
# (a few hundred ms) stays a fraction of the window it is counted in
SPEED = 60.0
PAIRS = 600  # uses of the feature in the forty minutes: ~17 a minute, ~26 at the peak
READ = (10.0, 40.0)  # simulated seconds the user reads the plan before asking for coaching

CHANGES: list[Change] = []  # the rate limits alone make the story


def calls(rng: random.Random) -> list[Call]:
    """Each use of the feature: its plan, then its coaching a little later, one session."""
    out = []
    starts = spread_over(PAIRS, rng, start=0.0, end=DURATION - READ[1] - 60)
    for number, at in enumerate(starts):
        session = {"x-turnout-session": f"user-{number:04d}"}
        out.append(
            Call(
                at,
                "plan",
                rng.randint(150, 400),
                rng.randint(150, 300),
                True,  # the app shows the plan as it is written
                "plan",
                headers=session,
            )
        )
        coaching_at = at + rng.uniform(*READ)
        out.append(
            Call(
                coaching_at,
                "coaching",
                rng.randint(300, 700),  # the plan goes back in with the user's goal
                rng.randint(200, 320),
                True,
                "coaching",
                headers=session,
            )
        )
    return sorted(out, key=lambda call: call.at)
