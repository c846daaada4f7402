"""Alert rules (config `alerts:`): events in, one AlertChanged out when a rule starts holding and
one when it stops, published on the bus for the webhook sink the rule names in `notify`.

- `misconfigured`: a provider's key is rejected (health's MISCONFIGURED, which the first 401 or
  403 raises at once) -> one alert; its RECOVERED (a probe or request succeeded with the key)
  -> one recovery message. Health announces each transition once, so a provider failing on
  every request still makes one alert.
- `budget_soft`: a budget crossed its soft share (health of spend: BudgetAlert is already
  once per budget and period) -> one alert; there is no recovery, the period ends.
- `fallback_rate`: the share of a route's requests (every route's, without `route`) that fell
  back, over the last `over` seconds, once at least `min_requests` are in the window: above
  `above` -> one alert, at or below `recover_below` (default 80% of `above`) -> one recovery
  message; in between, nothing changes, so a share hovering at the threshold does not flap.
  Judged as requests finish, so a recovery is told with the first request after the rate
  came down.

The engine is a queued subscriber like the sinks: it never runs on a request's path. Where
several processes serve (workers, replicas), each change is claimed first (claims.py), so the
fleet tells it once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from turnout.config.sinks import AlertRule
from turnout.events import BudgetAlert, EventBus, HealthChanged, HealthState, RequestFinished
from turnout.events.kinds import AlertChanged
from turnout.sinks.claims import AlertClaims, LocalClaims
from turnout.sinks.exported import fell_back


class _Window:
    """Requests of the last `over` seconds and how many of them fell back."""

    __slots__ = ("entries", "fallbacks", "over")

    def __init__(self, over: float) -> None:
        self.over = over
        self.entries: deque[tuple[float, bool]] = deque()
        self.fallbacks = 0

    def add(self, at: float, fallback: bool) -> None:
        self.entries.append((at, fallback))
        self.fallbacks += fallback
        horizon = at - self.over
        while self.entries and self.entries[0][0] < horizon:
            _, old = self.entries.popleft()
            self.fallbacks -= old

    @property
    def rate(self) -> float:
        return self.fallbacks / len(self.entries) if self.entries else 0.0


class AlertEngine:
    def __init__(
        self, rules: list[AlertRule], bus: EventBus, claims: AlertClaims | None = None
    ) -> None:
        self.rules = rules
        self._publish = bus.publish
        self.claims = claims or LocalClaims()
        self._claiming: set[asyncio.Task[None]] = set()
        self._windows = {
            i: _Window(r.over) for i, r in enumerate(rules) if r.when == "fallback_rate"
        }
        self._firing: set[tuple[int, str]] = set()  # (rule, subject) now firing
        self.raised = 0  # alerts raised (recoveries not counted)
        kinds: set[type] = set()
        wants = {r.when for r in rules}
        if "fallback_rate" in wants:
            kinds.add(RequestFinished)
        if "misconfigured" in wants:
            kinds.add(HealthChanged)
        if "budget_soft" in wants:
            kinds.add(BudgetAlert)
        self.subscription = bus.subscribe(self.handle, kinds=kinds, name="alert-rules")

    def handle(self, event: Any) -> None:
        if isinstance(event, RequestFinished):
            self._request(event)
        elif isinstance(event, HealthChanged):
            self._health(event)
        elif isinstance(event, BudgetAlert):
            self._budget(event)

    def _change(
        self,
        i: int,
        subject: str,
        firing: bool,
        message: str,
        at: float,
        details: dict[str, Any],
        claimed_as: str | None = None,
    ) -> None:
        """Publishes a change of rule `i` about `subject`; nothing when it is no change
        here, or when another process of the fleet has told it already. `claimed_as`: the
        subject's name in the fleet's claims, when the subject alone would be reused (a
        budget's next period)."""
        key = (i, subject)
        if firing == (key in self._firing):
            return
        if firing:
            self._firing.add(key)
        else:
            self._firing.discard(key)
        rule = self.rules[i]
        change = AlertChanged(rule.when, firing, rule.notify, subject, message, at, details)
        if not self.claims.shared:
            self._tell(change)
            return
        claim = f"{i}:{rule.when}:{claimed_as or subject}"
        task = asyncio.get_running_loop().create_task(self._claim_then_tell(claim, change))
        self._claiming.add(task)
        task.add_done_callback(self._claiming.discard)

    async def _claim_then_tell(self, claim: str, change: AlertChanged) -> None:
        if await self.claims.claim(claim, change.firing):
            self._tell(change)

    def _tell(self, change: AlertChanged) -> None:
        self.raised += change.firing
        self._publish(change)

    async def close(self) -> None:
        """The claims under way finished (their alerts published), then the claims closed."""
        if self._claiming:
            await asyncio.wait(set(self._claiming), timeout=5)
        await self.claims.close()

    def _request(self, event: RequestFinished) -> None:
        row = event.row
        at = row.started_at + row.latency_ms / 1000
        fallback = fell_back(row)
        for i, window in self._windows.items():
            rule = self.rules[i]
            if rule.route is not None and row.route != rule.route:
                continue
            window.add(at, fallback)
            if len(window.entries) < rule.min_requests:
                continue
            subject = rule.route or "every route"
            rate = window.rate
            figures = {
                "route": rule.route,
                "rate": round(rate, 4),
                "above": rule.above,
                "window_s": rule.over,
                "requests": len(window.entries),
            }
            if rate > rule.above:
                message = (
                    f"turnout ALERT: {subject}: {rate:.0%} of requests fell back over the last"
                    f" {rule.over:g}s (threshold {rule.above:.0%})"
                )
                self._change(i, subject, True, message, at, figures)
            elif rate <= rule.recovers_at:  # between the two: no change either way
                message = (
                    f"turnout RECOVERED: {subject}: fallback rate {rate:.0%} over the last"
                    f" {rule.over:g}s, at or below {rule.recovers_at:.0%}"
                )
                self._change(i, subject, False, message, at, figures)

    def _health(self, event: HealthChanged) -> None:
        if event.state not in (HealthState.MISCONFIGURED, HealthState.RECOVERED):
            return
        subject = f"provider {event.provider}"
        for i, rule in enumerate(self.rules):
            if rule.when != "misconfigured":
                continue
            figures = {"provider": event.provider, "reason": event.reason}
            if event.state == HealthState.MISCONFIGURED:
                message = (
                    f"turnout ALERT: {subject} rejects its key ({event.reason}):"
                    " its models are skipped until it is fixed"
                )
                self._change(i, subject, True, message, event.at, figures)
            else:
                message = f"turnout RECOVERED: {subject} accepts its key again"
                self._change(i, subject, False, message, event.at, figures)

    def _budget(self, event: BudgetAlert) -> None:
        subject = f"{event.scope} {event.name} {event.period} budget"
        for i, rule in enumerate(self.rules):
            if rule.when != "budget_soft":
                continue
            message = (
                f"turnout ALERT: {subject} at ${event.spent_usd:.4f} of ${event.limit_usd:.4f}"
            )
            details = event.as_dict()
            details.pop("type")
            details.pop("at")
            # once per budget and period already; a new period's alert is a new subject
            self._firing.discard((i, subject))
            fmt = "%Y-%m" if event.period == "monthly" else "%Y-%m-%d"
            period = time.strftime(fmt, time.gmtime(event.at))
            self._change(
                i, subject, True, message, event.at, details, claimed_as=f"{subject} {period}"
            )

    def stats(self) -> dict[str, Any]:
        return {"raised": self.raised, "firing": sorted(s for _, s in self._firing)}
