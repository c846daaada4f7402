"""A process's shelves (cache/shelf.py), one per conversation context, bounded all together,
and the in-process semantic vectors built on them (MemoryVectors).

The bound is on buckets and on vectors across them (least recently used bucket out first):
`max_vectors` bounds one context, not how many contexts a busy gateway sees."""

from __future__ import annotations

from collections import OrderedDict

from turnout import clock
from turnout.cache.shelf import Shelf
from turnout.cache.vectors import Match

MAX_BUCKETS = 10_000
MAX_TOTAL_VECTORS = 100_000  # at 1,536 dimensions: ~350 MB indexed (f16), ~600 MB as matrices


class Shelves:
    def __init__(self, max_buckets: int = MAX_BUCKETS, max_total: int = MAX_TOTAL_VECTORS) -> None:
        self._shelves: OrderedDict[str, Shelf] = OrderedDict()
        self._sizes: dict[str, int] = {}  # bucket -> its size when last counted
        self._total = 0
        self._max_buckets = max_buckets
        self._max_total = max_total

    def get(self, bucket: str) -> Shelf | None:
        """The bucket's shelf (now the most recently used), or None."""
        shelf = self._shelves.get(bucket)
        if shelf is not None:
            self._shelves.move_to_end(bucket)
        return shelf

    def take(self, bucket: str) -> Shelf:
        """The bucket's shelf, a new empty one if it had none."""
        shelf = self.get(bucket)
        if shelf is None:
            shelf = self._shelves[bucket] = Shelf()
            self._sizes[bucket] = 0
        return shelf

    def counted(self, bucket: str) -> None:
        """The bucket's shelf changed size: recount, and evict the least recently used
        buckets (never this one) while over a bound."""
        shelf = self._shelves.get(bucket)
        if shelf is None:
            return
        size = len(shelf)
        self._total += size - self._sizes[bucket]
        self._sizes[bucket] = size
        while len(self._shelves) > 1 and (
            len(self._shelves) > self._max_buckets or self._total > self._max_total
        ):
            oldest = next(iter(self._shelves))
            if oldest == bucket:
                break
            self.drop(oldest)

    def nearest(self, bucket: str, vector: bytes) -> Match | None:
        shelf = self.get(bucket)
        if shelf is None:
            return None
        match = shelf.nearest(vector, clock.now())
        self.counted(bucket)  # (expired ones may have gone)
        return match

    def drop(self, bucket: str) -> None:
        if self._shelves.pop(bucket, None) is not None:
            self._total -= self._sizes.pop(bucket)

    def drop_route(self, tag: str) -> int:
        """Forget the buckets of the route with this tag; how many there were."""
        prefix = f"{tag}:"
        doomed = [bucket for bucket in self._shelves if bucket.startswith(prefix)]
        for bucket in doomed:
            self.drop(bucket)
        return len(doomed)

    @property
    def total(self) -> int:
        return self._total


class MemoryVectors:
    """One process's buckets (the state backend is memory)."""

    def __init__(self, shelves: Shelves | None = None) -> None:
        self.shelves = shelves or Shelves()

    async def nearest(self, bucket: str, vector: bytes) -> Match | None:
        return self.shelves.nearest(bucket, vector)

    async def add(self, bucket: str, key: str, vector: bytes, ttl: float, limit: int) -> None:
        shelf = self.shelves.take(bucket)
        shelf.add(key, vector, clock.now() + ttl)
        shelf.drop_oldest(len(shelf) - limit)
        self.shelves.counted(bucket)

    async def clear(self, tag: str) -> int:
        return self.shelves.drop_route(tag)
