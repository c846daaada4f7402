"""The pure parts of the health engine: the breaker's state machine and rate-limit headers."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

import pytest

from turnout.config.schema import BreakerConfig, HealthConfig
from turnout.dialects.classify import retry_after
from turnout.health.breaker import Breaker, BreakerState
from turnout.health.engine import HealthEngine
from turnout.health.ratelimits import RateLimits, parse_reset, parse_windows
from turnout.model import ErrorClass, Outcome

NOW = 1_800_000_000.0
CONFIG = BreakerConfig(
    window=10,
    window_time=60,
    failure_rate=0.5,
    min_calls=6,
    consecutive_failures=4,
    open_for=5,
    max_open_for=20,
)


def test_consecutive_failures_trip_a_hard_outage() -> None:
    breaker = Breaker(CONFIG)
    for i in range(3):
        assert breaker.on_failure(NOW + i) is False
    assert breaker.on_failure(NOW + 3) is True
    assert breaker.state is BreakerState.OPEN
    assert breaker.open_until == NOW + 3 + 5
    assert not breaker.allow(NOW + 7.9)


def test_failure_rate_over_the_window_trips() -> None:
    breaker = Breaker(CONFIG)
    pattern = [True, False, True, False, False, True]  # 3 of 6 failed, never 4 in a row
    for i, ok in enumerate(pattern[:-1]):
        changed = breaker.on_success(NOW + i) if ok else breaker.on_failure(NOW + i)
        assert changed is False
    assert breaker.on_failure(NOW + 6) is True  # 4 of 7: at min_calls and over 50%


def test_old_calls_leave_the_window() -> None:
    breaker = Breaker(CONFIG)
    for i in range(3):
        breaker.on_failure(NOW + i)
    breaker.on_success(NOW + 3)
    for i in range(3):
        breaker.on_failure(NOW + 100 + i)  # the first failures are older than 60 s now
    assert breaker.state is BreakerState.CLOSED


def test_half_open_grants_one_probe_and_backs_off_exponentially() -> None:
    breaker = Breaker(CONFIG)
    for i in range(4):
        breaker.on_failure(NOW)
    assert breaker.allow(NOW + 5)  # open period over: this call is the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow(NOW + 5.1)  # one probe at a time
    assert breaker.on_failure(NOW + 6) is True
    assert breaker.open_until == NOW + 6 + 10  # doubled
    assert breaker.allow(NOW + 16)
    breaker.on_failure(NOW + 16)
    assert breaker.open_until == NOW + 16 + 20
    assert breaker.allow(NOW + 36)
    breaker.on_failure(NOW + 36)
    assert breaker.open_until == NOW + 36 + 20  # capped at max_open_for
    assert breaker.allow(NOW + 56)
    assert breaker.on_success(NOW + 57) is True
    assert breaker.state is BreakerState.CLOSED
    assert breaker.level == 0


def test_a_probe_without_a_verdict_frees_the_slot() -> None:
    breaker = Breaker(CONFIG)
    for _ in range(4):
        breaker.on_failure(NOW)
    assert breaker.allow(NOW + 5)
    breaker.release_probe()  # e.g. the probe was rate-limited: says nothing of health
    assert breaker.allow(NOW + 5.5)


def test_adopting_shared_state() -> None:
    breaker = Breaker(CONFIG)
    breaker.adopt("open", NOW + 30, 2)
    assert not breaker.allow(NOW + 29)
    assert breaker.allow(NOW + 30)
    breaker.adopt("closed", 0, 0)
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("6m0s", 360),
        ("1s", 1),
        ("20ms", 0.02),
        ("2m59.56s", 179.56),
        ("1h2m3s", 3723),
        ("11.38", 11.38),
        ("0", 0),
    ],
)
def test_reset_durations(value: str, seconds: float) -> None:
    assert parse_reset(value, NOW) == pytest.approx(NOW + seconds)


def test_reset_rfc3339_and_garbage() -> None:
    when = datetime.fromtimestamp(NOW + 42, UTC).isoformat().replace("+00:00", "Z")
    assert parse_reset(when, NOW) == pytest.approx(NOW + 42)
    assert parse_reset("soon", NOW) is None


def test_openai_headers() -> None:
    headers = {
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-reset-requests": "6ms",
        "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-tokens": "150",
        "x-ratelimit-reset-tokens": "1m30s",
    }
    windows = {w.kind: w for w in parse_windows(headers, NOW)}
    assert windows["requests"].remaining == 9999
    assert windows["tokens"].limit == 200000
    assert windows["tokens"].reset_at == pytest.approx(NOW + 90)
    limits = RateLimits()
    limits.update(headers, NOW)
    assert limits.blocked_until(NOW, prompt_tokens=100, max_output=20) is None
    assert limits.blocked_until(NOW, prompt_tokens=100, max_output=100) == pytest.approx(NOW + 90)


def test_groq_headers_mixed_case() -> None:
    headers = {
        "X-Ratelimit-Limit-Requests": "14400",  # per day at Groq
        "X-Ratelimit-Remaining-Requests": "0",
        "X-Ratelimit-Reset-Requests": "2m59.56s",
        "X-Ratelimit-Remaining-Tokens": "5000",
        "X-Ratelimit-Reset-Tokens": "7.66s",
    }
    limits = RateLimits()
    limits.update(headers, NOW)
    assert limits.blocked_until(NOW, 10, 10) == pytest.approx(NOW + 179.56)
    assert limits.exhausted_reset(NOW) == pytest.approx(NOW + 179.56)


def test_cerebras_day_and_minute_windows() -> None:
    headers = {
        "x-ratelimit-limit-requests-day": "14400",
        "x-ratelimit-remaining-requests-day": "14000",
        "x-ratelimit-reset-requests-day": "33011.382867",
        "x-ratelimit-limit-tokens-minute": "60000",
        "x-ratelimit-remaining-tokens-minute": "500",
        "x-ratelimit-reset-tokens-minute": "11.382867",
    }
    limits = RateLimits()
    limits.update(headers, NOW)
    assert {w.kind for w in limits.windows} == {"requests", "tokens"}
    assert limits.blocked_until(NOW, 400, 50) is None
    assert limits.blocked_until(NOW, 400, 200) == pytest.approx(NOW + 11.382867)


def test_anthropic_headers() -> None:
    reset = datetime.fromtimestamp(NOW + 30, UTC).isoformat()
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-input-tokens-limit": "50000",
        "anthropic-ratelimit-input-tokens-remaining": "1000",
        "anthropic-ratelimit-input-tokens-reset": reset,
        "anthropic-ratelimit-output-tokens-remaining": "0",
        "anthropic-ratelimit-output-tokens-reset": reset,
    }
    limits = RateLimits()
    limits.update(headers, NOW)
    # output is counted after the fact by Anthropic: an empty output window does not block
    assert limits.blocked_until(NOW, 500, 4000) is None
    assert limits.blocked_until(NOW, 2000, 10) == pytest.approx(NOW + 30)


def test_windows_past_their_reset_do_not_block() -> None:
    limits = RateLimits()
    limits.update({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"}, NOW)
    assert limits.blocked_until(NOW + 0.5, 0, 0) is not None
    assert limits.blocked_until(NOW + 1.5, 0, 0) is None


def test_retry_after_forms() -> None:
    assert retry_after({"retry-after": "20"}) == 20.0
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    date = email.utils.formatdate(NOW + 60, usegmt=True)
    assert retry_after({"Retry-After": date}, now=NOW) == pytest.approx(60, abs=1)


def test_a_success_begun_before_the_key_was_rejected_does_not_heal_it() -> None:
    """A long stream sent before the 401 ends well after it: that proves nothing about the key
    now. Only a request (or probe) sent after the rejection clears it."""
    engine = HealthEngine(HealthConfig())
    engine.register("alpha", "or")
    rejected = Outcome(
        "chat", "alpha", "or", ok=False, error_class=ErrorClass.AUTH, status=401, started=100.0
    )
    engine.record(rejected)
    assert "provider:or" in engine.misconfigured
    engine.record(Outcome("chat", "alpha", "or", ok=True, started=90.0, latency=15.0))
    assert "provider:or" in engine.misconfigured  # begun at 90, before the 401 at 100
    engine.record(Outcome("chat", "alpha", "or", ok=True, started=101.0, latency=0.5))
    assert "provider:or" not in engine.misconfigured  # sent after it: the key works again
