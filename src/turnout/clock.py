"""The gateway's clock for time WINDOWS: real time by default, simulated time in scenarios.

`now()` (epoch seconds) and `monotonic()` ARE `time.time` and `time.monotonic` unless
`run_faster(speed)` switched the process to a scaled clock, where simulated time runs `speed`
times faster than real time from the moment of the switch. Callers read them through the module
(`clock.now()`), never `from turnout.clock import now`, so that the switch reaches them, and by
default the read costs one attribute lookup more than `time.time()`.

What reads this clock (so that `turnout scenario run --speed 2000` plays a day in under a
minute, the gateway and the simulated upstreams agreeing on the hour):
- health: breaker cooldowns, rate-limit windows and cooldowns, misconfigured-key probes, latency
  windows (health/engine.py, health/pacing.py) and the places that ask health (execute/);
- accounting: budgets' day and month boundaries, key rate limits (gateway/admission.py);
- ledger rows' and events' timestamps (execute/attempt.py, gateway/exchange.py), so alert
  windows (sinks/alerts.py, which uses the events' own times) run in simulated time;
- canary rollout windows (rollouts/canary.py), the stale-answer store's max age (execute/stale.py),
  a queued route's `max_wait` (execute/scheduler.py);
- the sim: enforced rate-limit windows and outage windows (sim/state.py, sim/app.py).

What does NOT read it: request latencies (TTFT, durations, upstream timeouts, asyncio waits),
which stay real so that the figures measured under simulated time are true ones.
"""

from __future__ import annotations

import time

__all__ = ["advance", "monotonic", "now", "run_faster", "run_real", "set_speed", "speed"]

now = time.time
monotonic = time.monotonic
speed = 1.0  # simulated seconds per real second: periodic tasks divide their sleeps by it


def run_faster(factor: float, start: float | None = None) -> None:
    """Switch the process to simulated time running `factor` times faster than real time,
    starting at epoch `start` (default: now). Call it before the gateway starts: windows
    already open were measured on the old clock."""
    _scale(factor, time.time() if start is None else start, time.monotonic())


def set_speed(factor: float) -> None:
    """Change the speed of the simulated clock from now on, without a jump: a scenario plays
    the minutes around an upstream change in close-up, where real latencies (tens of ms, each
    worth seconds at full speed) would otherwise blur what happened when."""
    _scale(factor, now(), monotonic())


def advance(seconds: float) -> None:
    """Jump the simulated clock `seconds` ahead (a scenario skips the hours with no traffic)."""
    if seconds > 0:
        _scale(speed, now() + seconds, monotonic() + seconds)


def _scale(factor: float, epoch: float, simulated_mono: float) -> None:
    global now, monotonic, speed
    if factor <= 0:
        raise ValueError(f"speed must be positive, not {factor!r}")
    real_mono = time.monotonic
    origin = real_mono()

    def scaled_now() -> float:
        return epoch + factor * (real_mono() - origin)

    def scaled_monotonic() -> float:
        return simulated_mono + factor * (real_mono() - origin)

    now, monotonic, speed = scaled_now, scaled_monotonic, float(factor)


def run_real() -> None:
    """Back to real time (tests that switched the clock restore it)."""
    global now, monotonic, speed
    now, monotonic, speed = time.time, time.monotonic, 1.0
