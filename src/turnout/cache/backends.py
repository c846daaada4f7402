"""Where cached answers live: the Backend interface and the in-process LRU.

A backend stores opaque bytes under `{route tag}:{digest}` keys with a time to live, and
clears a route's keys by their tag. Memory (one process, bounded by entries and bytes) is the
default; Redis (cache/redis.py) when the state backend is Redis, so that every replica sees
what any other stored."""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from turnout import clock

MAX_ENTRIES = 10_000  # per process, for the memory backend; oldest-used out first
MAX_BYTES = 64 * 1024 * 1024  # and at most this much answer data


class CacheUnavailable(Exception):
    """The shared backend could not do what was asked (a clear): it did not happen."""


class Backend(Protocol):
    @property
    def shared(self) -> bool:
        """True when other processes see these entries (a reachable Redis)."""
        ...

    async def start(self) -> None: ...

    async def get(self, key: str) -> bytes | None:
        """The stored value; None when absent, expired, or the backend is unreachable."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store for `ttl` seconds; a backend that is unreachable drops it (and counts it)."""
        ...

    async def clear(self, tag: str) -> int:
        """Remove every entry of the route with this tag; how many were removed. Raises
        CacheUnavailable when the backend cannot be reached."""
        ...

    def stats(self) -> dict[str, int]: ...

    async def close(self) -> None: ...


class MemoryBackend:
    """A bounded LRU with per-entry expiry: get and set are O(1) dictionary operations."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._evicted = 0

    @property
    def shared(self) -> bool:
        return False

    async def start(self) -> None:
        return None

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        value, expires = found
        if expires <= clock.monotonic():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if key in self._entries:
            self._remove(key)
        self._entries[key] = (value, clock.monotonic() + ttl)  # (a TTL is a time window)
        self._bytes += len(value)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self._evicted += 1

    async def clear(self, tag: str) -> int:
        prefix = f"{tag}:"
        doomed = [key for key in self._entries if key.startswith(prefix)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def _remove(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self._bytes -= len(value)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "bytes": self._bytes, "evicted": self._evicted}

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0
