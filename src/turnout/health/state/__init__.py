"""Where health state is shared: in memory (one process), or Redis (a fleet)."""

from turnout.health.state.base import ApplyRemote, StateStore
from turnout.health.state.memory import MemoryStore

__all__ = ["ApplyRemote", "MemoryStore", "StateStore", "make_store"]


def make_store(backend: str, url: str, prefix: str, name: str = "health") -> StateStore:
    """`name`: whose documents these are (health, rollouts): each has its own hash and channel."""
    if backend == "redis":
        from turnout.health.state.redis import RedisStore

        return RedisStore(url, prefix, name)
    return MemoryStore()
