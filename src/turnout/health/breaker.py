"""A circuit breaker per model, learned from real outcomes (a pure state machine: the clock
is passed in).

Closed: every call goes through; the breaker opens when, among the last `window` calls no
older than `window_time`, at least `min_calls` were made and `failure_rate` of them failed,
or at once after `consecutive_failures` failures in a row (a hard outage should not need a
whole window to be noticed). Open: no calls until `open_until`. Half-open: exactly one call
(a real request, or a synthetic probe when idle) decides: success closes, failure opens
again for twice as long, up to `max_open_for`.
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum

from turnout.config.schema import BreakerConfig

_PROBE_STALE = 60.0  # a probe whose outcome never came back no longer blocks the next one


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    __slots__ = ("_calls", "config", "consecutive", "level", "open_until", "probe_since", "state")

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self.state = BreakerState.CLOSED
        self.open_until = 0.0
        self.level = 0  # opens in a row without a successful close: the backoff exponent
        self.consecutive = 0
        self.probe_since: float | None = None
        self._calls: deque[tuple[float, bool]] = deque(maxlen=config.window)

    def allow(self, now: float) -> bool:
        """May a call go to this model now? In half-open, grants the one probe."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now < self.open_until:
                return False
            self.state = BreakerState.HALF_OPEN
            self.probe_since = None
        if self.probe_since is not None and now - self.probe_since < _PROBE_STALE:
            return False
        self.probe_since = now
        return True

    def waiting_for_probe(self, now: float) -> bool:
        """Half-open (or due to be) with no probe in flight: an idle model needs a synthetic one."""
        if self.state is BreakerState.OPEN:
            return now >= self.open_until
        if self.state is BreakerState.HALF_OPEN:
            return self.probe_since is None or now - self.probe_since >= _PROBE_STALE
        return False

    def release_probe(self) -> None:
        """The probe ended without a verdict (rate-limited, client error): another may try."""
        self.probe_since = None

    def on_success(self, now: float) -> bool:
        """Returns True when the state changed (closed again)."""
        self.consecutive = 0
        if self.state is not BreakerState.CLOSED:
            self.close()
            return True
        self._calls.append((now, True))
        return False

    def on_failure(self, now: float) -> bool:
        """Returns True when the state changed (opened)."""
        if self.state is not BreakerState.CLOSED:
            if self.state is BreakerState.HALF_OPEN or now >= self.open_until:
                self._open(now)  # the probe failed: back off further
                return True
            return False  # a call that was already in flight when the breaker opened
        self.consecutive += 1
        self._calls.append((now, False))
        if self.consecutive >= self.config.consecutive_failures or self._rate_exceeded(now):
            self._open(now)
            return True
        return False

    def _rate_exceeded(self, now: float) -> bool:
        horizon = now - self.config.window_time
        while self._calls and self._calls[0][0] < horizon:
            self._calls.popleft()
        if len(self._calls) < self.config.min_calls:
            return False
        failures = sum(1 for _, ok in self._calls if not ok)
        return failures / len(self._calls) >= self.config.failure_rate

    def _open(self, now: float) -> None:
        duration = min(self.config.open_for * (2**self.level), self.config.max_open_for)
        self.state = BreakerState.OPEN
        self.open_until = now + duration
        self.level += 1
        self.probe_since = None
        self._calls.clear()
        self.consecutive = 0

    def close(self) -> None:
        self.state = BreakerState.CLOSED
        self.level = 0
        self.open_until = 0.0
        self.probe_since = None
        self._calls.clear()
        self.consecutive = 0

    def adopt(self, state: str, open_until: float, level: int) -> None:
        """Take the state another gateway process published."""
        if state == BreakerState.CLOSED:
            self.close()
            return
        self.state = BreakerState(state)
        self.open_until = open_until
        self.level = level
        self.probe_since = None
