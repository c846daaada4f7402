"""Which process tells an alert: one message per change for the whole fleet, not one per
process.

Every process runs the alert rules over what it sees, so with `--workers N` or N replicas each
would notice an expired key (or a fallback rate over its threshold) and post it: N messages
for one change. Before publishing, a process claims the change: the claim records the rule's
subject as firing or recovered where every process sees it, and only the process that moved
it tells. Where the processes share state:

- `RedisClaims` (state backend redis): an atomic compare-and-set per subject (a Lua script);
- `FileClaims` (`--workers N` on the memory backend): a locked JSON file in the supervisor's
  directory for its workers;
- `LocalClaims` (one process): no one else to agree with.

When the shared place cannot be reached, the process tells anyway: a duplicate message is
better than a lost alert.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
from abc import ABC, abstractmethod
from pathlib import Path

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("turnout.sinks")

# how long the fleet remembers a subject's state: long enough to absorb every process noticing
# the same change, short enough that a fleet restarted before a recovery was told does not
# stay silent about the same subject for long
_REMEMBER_S = 3600

# set the subject's state; 1 when this call changed it, 0 when it was that already
_COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class AlertClaims(ABC):
    #: False: every claim is granted at once, so the engine publishes without a task
    shared: bool = True

    @abstractmethod
    async def claim(self, subject: str, firing: bool) -> bool:
        """Records `subject` as firing (or not); True when this process moved it and tells."""

    async def close(self) -> None:
        return None


class LocalClaims(AlertClaims):
    shared = False

    async def claim(self, subject: str, firing: bool) -> bool:
        return True


class RedisClaims(AlertClaims):
    def __init__(self, url: str, prefix: str) -> None:
        self._redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = f"{prefix}:alerts:"
        self._script = self._redis.register_script(_COMPARE_AND_SET)

    async def claim(self, subject: str, firing: bool) -> bool:
        state = "firing" if firing else "recovered"
        try:
            moved = await self._script(keys=[self._prefix + subject], args=[state, _REMEMBER_S])
        except (RedisError, OSError) as exc:  # redis away: tell rather than lose the alert
            log.warning("alert claims: redis unreachable (%s); telling from this process", exc)
            return True
        return bool(moved)

    async def close(self) -> None:
        await self._redis.aclose()


class FileClaims(AlertClaims):
    """The workers of one supervisor: a JSON object (subject -> state) in their directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "alerts.state"

    async def claim(self, subject: str, firing: bool) -> bool:
        return await asyncio.to_thread(self._claim, subject, "firing" if firing else "recovered")

    def _claim(self, subject: str, state: str) -> bool:
        try:
            with self.path.open("a+b") as file:
                fcntl.flock(file, fcntl.LOCK_EX)  # released when the file closes
                file.seek(0)
                raw = file.read()
                states = orjson.loads(raw) if raw else {}
                if states.get(subject) == state:
                    return False
                states[subject] = state
                file.seek(0)
                file.truncate()
                file.write(orjson.dumps(states))
                return True
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("alert claims: %s unusable (%s); telling from this process", self.path, exc)
            return True


def make_claims(backend: str, url: str, prefix: str) -> AlertClaims:
    """Claims shared through the state backend; one process's own without Redis (the server
    gives a supervisor's workers their FileClaims: Sinks.claim_alerts_in)."""
    return RedisClaims(url, prefix) if backend == "redis" else LocalClaims()
