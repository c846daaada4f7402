"""Subscribers that plugins add to every gateway's bus.

A module named in TURNOUT_PLUGINS (imported before the config loads) calls
`register_subscriber(attach)`; each Gateway then calls `attach(bus)` once, and `attach`
subscribes what it likes (`bus.subscribe(handler, kinds=..., inline=...)`). This is how an
event sink, a metrics exporter or the benchmark's event counter joins without editing the
core."""

from __future__ import annotations

from collections.abc import Callable

from turnout.events.bus import EventBus

Attach = Callable[[EventBus], None]
_ATTACHED: list[Attach] = []


def register_subscriber(attach: Attach) -> Attach:
    """Every gateway built from now on calls `attach(bus)`. Usable as a decorator."""
    _ATTACHED.append(attach)
    return attach


def subscribe_plugins(bus: EventBus) -> None:
    for attach in _ATTACHED:
        attach(bus)
