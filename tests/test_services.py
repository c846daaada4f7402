"""The throwaway services a clone starts for its tests when the machine has none running
(tests/services.py): started here whatever the machine has, so the fallback is known to work."""

from __future__ import annotations

import asyncpg
import pytest
import redis
from aiohttp import web

from tests.services import (
    Unavailable,
    _usable_postgres,
    _usable_redis,
    start_postgres,
    start_redis,
    throwaway,
)
from tests.upstreams import serve_app


def test_a_throwaway_redis_serves() -> None:
    url = throwaway(start_redis)
    assert _usable_redis(url) == url  # the check that a found Redis is usable passes it
    client = redis.Redis.from_url(url)
    assert client.ping() is True
    client.set("turnout-test", "1")
    assert client.get("turnout-test") == b"1"
    client.close()


async def test_a_throwaway_postgres_has_a_test_database() -> None:
    server = throwaway(start_postgres)
    conn = await asyncpg.connect(f"{server}/test")
    try:
        assert await conn.fetchval("SELECT current_database()") == "test"
        await conn.execute('CREATE DATABASE "turnout_throwaway"')  # the tests make their own
    finally:
        await conn.close()


def test_a_server_that_is_not_usable_is_a_reason_not_a_crash() -> None:
    """Something listening where Redis or PostgreSQL should be, but not answering as one (a
    server wanting a password would do the same): the tests get a reason to skip with, the
    URL's password left out of it."""
    with serve_app(web.Application()) as port:  # HTTP, neither Redis nor PostgreSQL
        with pytest.raises(Unavailable, match="does not answer PING") as no_redis:
            _usable_redis(f"redis://:hunter2secret@127.0.0.1:{port}/0")
        with pytest.raises(Unavailable, match="is not usable") as refused:
            _usable_postgres(f"postgresql://postgres:hunter2secret@127.0.0.1:{port}")
    assert "hunter2secret" not in str(refused.value) + str(no_redis.value)
    assert f"postgres:***@127.0.0.1:{port}/test" in str(refused.value)
