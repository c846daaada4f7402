"""The throwaway services a clone starts for its tests when the machine has none running
(tests/services.py): started here whatever the machine has, so the fallback is known to work."""

from __future__ import annotations

import asyncpg
import redis

from tests.services import start_postgres, start_redis


def test_a_throwaway_redis_serves() -> None:
    client = redis.Redis.from_url(start_redis())
    assert client.ping() is True
    client.set("turnout-test", "1")
    assert client.get("turnout-test") == b"1"
    client.close()


async def test_a_throwaway_postgres_has_a_test_database() -> None:
    server = start_postgres()
    conn = await asyncpg.connect(f"{server}/test")
    try:
        assert await conn.fetchval("SELECT current_database()") == "test"
        await conn.execute('CREATE DATABASE "turnout_throwaway"')  # the tests make their own
    finally:
        await conn.close()
