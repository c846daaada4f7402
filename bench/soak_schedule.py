"""The chaos soak's fault schedule: phases of injected faults and the gateway actions (SIGHUP,
graceful restart), laid out over the run. Whether a target was healthy at a moment is read
from this schedule, never guessed from what the clients saw."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# the simulated models: where they live and which wire format they speak
SIM_A_MODELS = ("alpha",)  # sim A: the primary, OpenAI wire format; stopped for "refused"
SIM_B_MODELS = ("beta", "claude", "tortoise")  # sim B: claude is served in Anthropic's format
ROUTES = {
    "chat": ("alpha", "beta", "claude"),  # alpha -> beta -> claude (cross-dialect failover)
    "slow": ("tortoise",),  # answers after 1.5 s: for clients that time out before the answer
}
REPLY = (
    "The gateway keeps answering while the upstreams misbehave: outages, rate limits, hangs,"
    " dropped streams and broken JSON all fail over to the next healthy model."
)
BASE: dict[str, dict[str, Any]] = {
    "alpha": {"ttft": "20ms", "tokens_per_second": 400, "reply": REPLY},
    "beta": {"ttft": "20ms", "tokens_per_second": 400, "reply": REPLY},
    "claude": {"ttft": "20ms", "tokens_per_second": 400, "reply": REPLY},
    "tortoise": {"ttft": "1500ms", "tokens_per_second": 400, "reply": "Slowly, surely."},
}
# breaker settings of the soak's gateway: an open breaker closes at most this long after its
# model recovers, plus one probe; the recovery window after "all down" is derived from it
OPEN_FOR_S, MAX_OPEN_FOR_S, PROBE_INTERVAL_S = 2.0, 8.0, 1.0
RECOVERY_S = MAX_OPEN_FOR_S + 2 * PROBE_INTERVAL_S
DOWN = {"error_rate": {503: 1.0}}


@dataclass(frozen=True)
class Phase:
    name: str
    what: str  # the injection, in words
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> SimBehaviour
    sim_a_down: bool = False  # sim A's process stopped: connection refused
    recovering: bool = False  # every model healthy again, breakers still closing
    start: float = 0.0
    end: float = 0.0

    def faulty(self) -> set[str]:
        return set(self.faults) | (set(SIM_A_MODELS) if self.sim_a_down else set())

    def healthy_targets(self, route: str) -> list[str]:
        """Targets of the route that had no fault injected in this phase."""
        if self.recovering:
            return []  # healthy upstreams, but the gateway cannot know yet: counted apart
        return [t for t in ROUTES[route] if t not in self.faulty()]

    def behaviour(self, model: str) -> dict[str, Any]:
        return {**BASE[model], **self.faults.get(model, {})}


@dataclass(frozen=True)
class Action:
    at: float
    kind: str  # sighup | restart
    what: str


# (name, share of the run, what, faults, sim A down); recovery is fixed at RECOVERY_S
_PLAN: list[tuple[str, float, str, dict[str, dict[str, Any]], bool]] = [
    ("warm-up", 25, "no faults", {}, False),
    ("outage-500", 30, "alpha answers every request with 500", {"alpha": {"error_rate": {500: 1.0}}}, False),
    ("refused", 30, "sim A (alpha) stopped: connection refused", {}, True),
    (
        "429-storm", 30,
        ("alpha 429 on every request (Retry-After 3 s), beta on 80% (Retry-After 2 s): "
         "claude (Anthropic wire format) answers"),
        {"alpha": {"rate_limit_rate": 1.0, "retry_after": 3},
         "beta": {"rate_limit_rate": 0.8, "retry_after": 2}},
        False,
    ),
    (
        "hangs", 30, "alpha never answers (beyond ttft 1 s / total 4 s), beta hangs on 30%",
        {"alpha": {"hang_rate": 1.0}, "beta": {"hang_rate": 0.3}}, False,
    ),
    (
        "drops", 30,
        "connections dropped mid-answer before the first token: alpha 80%, beta 40%",
        {"alpha": {"disconnect_rate": 0.8, "disconnect_after": 1},
         "beta": {"disconnect_rate": 0.4, "disconnect_after": 1}},
        False,
    ),
    (
        "malformed-json", 30, "JSON-mode answers are broken JSON: alpha 100%, beta 50%",
        {"alpha": {"malformed_rate": 1.0}, "beta": {"malformed_rate": 0.5}}, False,
    ),
    (
        "all-down", 15, "every model answers 503: no target healthy",
        {m: DOWN for m in (*SIM_A_MODELS, *SIM_B_MODELS)}, False,
    ),
    (
        "mixed", 35,
        ("alpha 500 20%, 429 10% (Retry-After 1 s), hang 5%, drop before first token 10%; "
         "beta 502 15%"),
        {"alpha": {"error_rate": {500: 0.2}, "rate_limit_rate": 0.1, "retry_after": 1,
                   "hang_rate": 0.05, "disconnect_rate": 0.1, "disconnect_after": 1},
         "beta": {"error_rate": {502: 0.15}}},
        False,
    ),
    (
        "late-drops", 20,
        ("alpha drops 20% of connections after 4 chunks: streams already committed to alpha "
         "break after content reached the client (no continuation yet: told explicitly)"),
        {"alpha": {"disconnect_rate": 0.2, "disconnect_after": 4}}, False,
    ),
    ("cool-down", 15, "no faults", {}, False),
]  # fmt: skip
_ACTIONS = [  # (share of the run, kind): restart early, so one process runs to the end
    (40, "restart", "graceful restart: SIGTERM, wait for exit, start again (same port, ledger)"),
    (185, "sighup", "SIGHUP to the gateway"),
]
_PLAN_TOTAL = sum(share for _, share, *_ in _PLAN)  # 300: the shares are seconds of 5 minutes


def build(minutes: float) -> tuple[list[Phase], list[Action]]:
    """The schedule scaled to `minutes` (the recovery window after all-down is not scaled)."""
    scale = max(minutes * 60 - RECOVERY_S, 10.0) / _PLAN_TOTAL
    phases: list[Phase] = []
    t = 0.0
    for name, share, what, faults, sim_a_down in _PLAN:
        length = share * scale
        phases.append(Phase(name, what, faults, sim_a_down, False, t, t + length))
        t += length
        if name == "all-down":
            what = (
                f"no faults; breakers opened during all-down close within max_open_for "
                f"{MAX_OPEN_FOR_S:g} s and a probe: failures here are counted apart"
            )
            phases.append(Phase("recovery", what, {}, False, True, t, t + RECOVERY_S))
            t += RECOVERY_S
    # actions are placed by the schedule's own clock (shares before all-down are not shifted)
    actions = [Action(share * scale, kind, what) for share, kind, what in _ACTIONS]
    return phases, actions


def phase_at(phases: list[Phase], t: float) -> Phase:
    for phase in phases:
        if phase.start <= t < phase.end:
            return phase
    return phases[-1]


def phases_between(phases: list[Phase], t0: float, t1: float) -> list[Phase]:
    return [p for p in phases if p.start <= t1 and t0 < p.end] or [phase_at(phases, t0)]


def describe(phases: list[Phase], actions: list[Action]) -> list[str]:
    lines = []
    for p in phases:
        healthy = ", ".join(f"{r}: {'/'.join(p.healthy_targets(r)) or '-'}" for r in ROUTES)
        lines.append(f"{p.start:6.1f}-{p.end:6.1f}s  {p.name:<15} {p.what}  [healthy {healthy}]")
    for a in actions:
        lines.append(f"{a.at:6.1f}s         action: {a.what}")
    return lines


def as_json(phases: list[Phase], actions: list[Action]) -> dict[str, Any]:
    return {
        "phases": [
            {
                "name": p.name,
                "start_s": round(p.start, 2),
                "end_s": round(p.end, 2),
                "what": p.what,
                "faults": p.faults,
                "sim_a_down": p.sim_a_down,
                "healthy_targets": {r: p.healthy_targets(r) for r in ROUTES},
            }
            for p in phases
        ],
        "actions": [{"at_s": round(a.at, 2), "kind": a.kind, "what": a.what} for a in actions],
    }
