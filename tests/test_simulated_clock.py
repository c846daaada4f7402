"""Time windows read turnout.clock, so that a scenario's simulated hours age them: a session's
stickiness, a cached answer, an address locked out for failed keys, and what health learns from
an attempt (on the attempt's own end on that clock, not its start plus a real latency)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from turnout import clock
from turnout.accounting.auth import Authenticator, AuthError, AuthRules
from turnout.cache.backends import MemoryBackend
from turnout.config.schema import HealthConfig
from turnout.health.engine import HealthEngine
from turnout.model import ErrorClass, Outcome
from turnout.routing.sessions import SessionMap

HOUR = 3600.0


@pytest.fixture
def simulated() -> Iterator[None]:
    """The process on a scaled clock (at speed 1: only `clock.advance` moves it faster)."""
    clock.run_faster(1.0)
    yield
    clock.run_real()


def test_a_session_forgets_its_model_after_its_ttl_of_simulated_time(simulated: None) -> None:
    sessions = SessionMap(ttl=HOUR)
    sessions.put("chat", "user-1", "scout")
    clock.advance(HOUR / 2)
    assert sessions.get("chat", "user-1") == "scout"
    clock.advance(HOUR)
    assert sessions.get("chat", "user-1") is None


async def test_a_cached_answer_expires_after_its_ttl_of_simulated_time(simulated: None) -> None:
    cache = MemoryBackend()
    await cache.set("route:key", b"answer", ttl=HOUR)
    clock.advance(HOUR / 2)
    assert await cache.get("route:key") == b"answer"
    clock.advance(HOUR)
    assert await cache.get("route:key") is None


async def test_a_locked_out_address_is_let_back_after_a_simulated_minute(simulated: None) -> None:
    keys, rules = Authenticator(None), AuthRules(required=True)
    headers = {"authorization": "Bearer sk-wrong"}
    for _ in range(keys.failures.max_failures):
        with pytest.raises(AuthError) as refused:
            await keys.identify(headers, rules, "203.0.113.9")
        assert refused.value.status == 401
    with pytest.raises(AuthError) as blocked:
        await keys.identify(headers, rules, "203.0.113.9")
    assert blocked.value.status == 429
    clock.advance(keys.failures.window + 1)
    with pytest.raises(AuthError) as again:
        await keys.identify(headers, rules, "203.0.113.9")
    assert again.value.status == 401  # the lockout is over: the key itself is refused


def test_health_learns_on_the_attempts_end_on_turnouts_clock() -> None:
    """Under a scenario an attempt begun at simulated 100.0 and lasting 0.5 real seconds ended
    at simulated 130.0 (speed 60): a 429's cooldown runs from 130, not from 100.5."""
    engine = HealthEngine(HealthConfig())
    engine.register("alpha", "sim")
    engine.record(
        Outcome(
            "chat",
            "alpha",
            "sim",
            ok=False,
            error_class=ErrorClass.RATE_LIMITED,
            status=429,
            started=100.0,
            latency=0.5,
            retry_after=10.0,
            ended=130.0,
        )
    )
    assert engine.skip_reason("alpha", 135.0) is not None  # cooling until 140
    assert engine.skip_reason("alpha", 141.0) is None
