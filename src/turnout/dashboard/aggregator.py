"""What the dashboard shows that health does not keep: per route and minute, requests, errors,
fallbacks, spend and savings for the last WINDOW minutes, today's totals, and the last events.

A queued bus subscriber (never inline: it is not needed for a request to finish). Each event
costs O(1) and memory is bounded whatever clients send: only the config's routes get their
own figures, every other name a client asks for (a model forced by name, a made-up route)
shares one `other` bucket, and the event log is a ring of the last EVENTS entries.

The figures follow `turnout report`'s definitions (accounting/store/summary.py): errors are
outcomes `error` and `stream_failed`; a fallback is an `ok` answer with a non-empty
`attempts` list (a target before it failed or was skipped); the fallback rate is fallbacks
over ok answers. Each gateway process counts what it served itself, from its own start."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from turnout.accounting.budgets import period_start
from turnout.config.schema import Config
from turnout.events import (
    BudgetAlert,
    ConfigReloaded,
    HealthChanged,
    RequestFinished,
    RolloutChanged,
)

WINDOW = 15  # minutes of per-minute figures kept per route
EVENTS = 50  # the last events kept for the page
_TEXT = 200  # characters of any one text field an event keeps
_ERRORS = frozenset({"error", "stream_failed"})


class Counts:
    """Request figures over some span: one minute, or today."""

    __slots__ = ("baseline", "errors", "fallbacks", "ok", "requests", "spend")

    def __init__(self) -> None:
        self.requests = self.ok = self.errors = self.fallbacks = 0
        self.spend = self.baseline = 0.0

    def add(self, row: Any) -> None:
        self.requests += 1
        if row.outcome == "ok":
            self.ok += 1
            self.fallbacks += bool(row.attempts)
        elif row.outcome in _ERRORS:
            self.errors += 1
        self.spend += row.cost_usd
        self.baseline += row.baseline_cost_usd

    def figures(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "fallbacks": self.fallbacks,
            "fallback_rate": self.fallbacks / self.ok if self.ok else None,
            "spend_usd": round(self.spend, 8),
            "savings_usd": round(self.baseline - self.spend, 8),
        }


class RouteStats:
    """One route's minutes (a ring indexed by minute number) and its totals for today."""

    __slots__ = ("day", "day_start", "minutes", "slots")

    def __init__(self) -> None:
        self.minutes = [-1] * WINDOW  # the minute each slot holds (-1: none yet)
        self.slots = [Counts() for _ in range(WINDOW)]
        self.day_start = 0.0
        self.day = Counts()

    def add(self, row: Any, at: float) -> None:
        minute = int(at // 60)
        index = minute % WINDOW
        if self.minutes[index] < minute:  # a slot last used WINDOW or more minutes ago
            self.minutes[index], self.slots[index] = minute, Counts()
        if self.minutes[index] == minute:  # (a row from before the window counts for today only)
            self.slots[index].add(row)
        day = period_start("daily", at)
        if day != self.day_start:
            if day < self.day_start:
                return  # yesterday's row, published after midnight: not today's
            self.day_start, self.day = day, Counts()
        self.day.add(row)

    def figures(self, now: float) -> dict[str, Any]:
        """Per minute (oldest first, empty minutes as zeros), the window's sum, today's."""
        current = int(now // 60)
        window, series = Counts(), []
        for minute in range(current - WINDOW + 1, current + 1):
            index = minute % WINDOW
            counts = self.slots[index] if self.minutes[index] == minute else None
            series.append(
                {
                    "at": minute * 60,
                    "requests": counts.requests if counts else 0,
                    "errors": counts.errors if counts else 0,
                    "fallbacks": counts.fallbacks if counts else 0,
                }
            )
            if counts is not None:
                _merge(window, counts)
        today = self.day if self.day_start == period_start("daily", now) else Counts()
        return {"minutes": series, "window": window.figures(), "today": today.figures()}


def _merge(into: Counts, counts: Counts) -> None:
    into.requests += counts.requests
    into.ok += counts.ok
    into.errors += counts.errors
    into.fallbacks += counts.fallbacks
    into.spend += counts.spend
    into.baseline += counts.baseline


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:_TEXT]


def _class(reason: str | None) -> str | None:
    """A reason without its details: "open(41.2s)" -> "open"."""
    return None if reason is None else reason.split("(", 1)[0]


class Aggregator:
    """The dashboard's memory. `config` returns the config serving now (it changes on a
    reload: a route the new config drops loses its figures, a new one starts empty)."""

    KINDS = (RequestFinished, HealthChanged, BudgetAlert, ConfigReloaded, RolloutChanged)

    def __init__(self, config: Callable[[], Config], clock: Callable[[], float] = time.time):
        self._config = config
        self._clock = clock
        self.started_at = clock()
        self._seen: Config | None = None
        self.routes: dict[str, RouteStats] = {}
        self.other = RouteStats()  # every name that is not a configured route
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS)

    def on_event(self, event: Any) -> None:
        """The bus handler: one event, O(1) (a reload's pruning aside, once per reload)."""
        if isinstance(event, RequestFinished):
            self._request(event.row)
        elif isinstance(event, HealthChanged):
            self._log(
                "health",
                event.at,
                model=event.model,
                provider=event.provider,
                state=event.state.value,
                reason=_text(event.reason),
            )
        elif isinstance(event, BudgetAlert):
            self._log("budget", event.at, **{k: v for k, v in event.as_dict().items() if k != "at"})
        elif isinstance(event, ConfigReloaded):
            self._log(
                "reload",
                event.at,
                ok=event.ok,
                version=event.version,
                previous=event.previous,
                error=_text(event.error),
                restart_needed=list(event.restart_needed),
            )
        elif isinstance(event, RolloutChanged):
            self._log(
                "rollout",
                event.at,
                route=event.route,
                candidate=event.candidate,
                action=event.action,
                percent=event.percent,
                objective=event.objective,
                observed=event.observed,
                limit=event.limit,
            )

    def _stats(self, route: str) -> RouteStats:
        config = self._config()
        if config is not self._seen:  # the first request, or the first after a reload
            self._seen = config
            for gone in [name for name in self.routes if name not in config.routes]:
                del self.routes[gone]
        if route not in config.routes:
            return self.other
        stats = self.routes.get(route)
        if stats is None:
            stats = self.routes[route] = RouteStats()
        return stats

    def _request(self, row: Any) -> None:
        at = row.started_at + row.latency_ms / 1000  # when it finished: the queue may lag
        stats = self._stats(row.route)
        stats.add(row, at)
        if not row.attempts:
            return
        route = row.route if stats is not self.other else None
        passed = [
            {"model": _text(a.get("model")), "reason": _text(a.get("reason"))}
            for a in row.attempts[:5]  # a plan is a handful of targets; the ledger has the rest
        ]
        same = (route, row.model, [(p["model"], _class(p["reason"])) for p in passed])
        last = self.events[-1] if self.events else None
        if last is not None and last.get("same") == same:
            # the same failover again (e.g. "open(41.2s)" then "open(40.9s)"): one line,
            # counted and showing the latest reasons, not a flood that hides everything else
            last.update(at=at, passed=passed, count=last["count"] + 1)
            return
        self._log("fallback", at, route=route, to=row.model, passed=passed, count=1, same=same)

    def _log(self, kind: str, at: float, **fields: Any) -> None:
        self.events.append({"kind": kind, "at": at, **fields})

    def figures(self, route: str | None) -> dict[str, Any]:
        """A route's figures (None: the `other` bucket's), as of now."""
        stats = self.other if route is None else self.routes.get(route) or RouteStats()
        return stats.figures(self._clock())

    def last_events(self) -> list[dict[str, Any]]:
        """The kept events, newest first (copies: the page's JSON, not the live entries)."""
        return [
            {name: value for name, value in event.items() if name != "same"}
            for event in reversed(self.events)
        ]
