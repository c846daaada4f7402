"""A turnout plugin for the benchmark: one more event-bus subscriber, counting every event.

bench/run.py starts turnout with TURNOUT_PLUGINS=event_counter (bench/ on PYTHONPATH), so
that the figures include what a real deployment has: the bus on, health and the ledger
subscribed, and one more subscriber of the kind metrics exporters are. At exit the counts go
to stderr (the server's log under bench/out/logs), which shows the subscriber ran."""

from __future__ import annotations

import atexit
import sys
from collections import Counter

try:
    from turnout.events import AttemptFinished, BudgetAlert, HealthChanged, RequestFinished
    from turnout.events.plugins import register_subscriber
except ImportError:  # a revision from before the event bus (bench/compare.py runs old ones)
    register_subscriber = None

COUNTS: Counter[str] = Counter()


def _count(event: object) -> None:
    COUNTS[type(event).__name__] += 1


if register_subscriber is not None:

    @register_subscriber
    def _attach(bus) -> None:
        kinds = (AttemptFinished, RequestFinished, HealthChanged, BudgetAlert)
        bus.subscribe(_count, kinds=kinds, inline=True, name="bench-counter")

    @atexit.register
    def _report() -> None:
        sys.stderr.write(f"bench event counter: {dict(COUNTS)}\n")
