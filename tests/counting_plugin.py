"""A test-only plugin that adds an event subscriber: every event it is given is counted in
/health's event stats under its name. A gateway loads it with
`TURNOUT_PLUGINS=tests.counting_plugin`."""

from __future__ import annotations

from turnout.events import AttemptFinished, EventBus, RequestFinished
from turnout.events.plugins import register_subscriber

SEEN: list[object] = []


@register_subscriber
def attach(bus: EventBus) -> None:
    bus.subscribe(SEEN.append, kinds=(AttemptFinished, RequestFinished), name="test-counter")
