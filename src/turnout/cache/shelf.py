"""One conversation context's vectors, searched by cosine similarity: a numpy matrix while
it is small, a usearch HNSW index once it is not.

A lookup must stay well under a millisecond at the largest bound (`max_vectors` 10,000 of
1,536 dimensions): brute force cannot (a 10,000 x 1,536 product is several ms), an HNSW
graph can (a fraction of a ms). But most contexts hold a handful of vectors (each turn of a
conversation is its own context) and an HNSW index costs tens of KB even empty, so a shelf
is a plain matrix (exact, microseconds) until it holds `INDEXED_FROM` vectors. The index
stores half-precision vectors (half the memory; similarities within 1e-4) and is
searched approximately (recall near 1 for the close neighbours a cache looks for).

Not thread-safe: the event loop is its only user, but for a batch added on a thread while
the shelf is marked busy (and left alone)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from turnout.cache.vectors import Match, vector_array

if TYPE_CHECKING:
    from usearch.index import Index

INDEXED_FROM = 256  # vectors: from this many on, an HNSW index instead of brute force
_CANDIDATES = 4  # nearest fetched at a time: an expired one is skipped for the next
# HNSW's breadth of search (usearch's default 64): a cache looks for a close neighbour (a
# paraphrase, 0.9 similar), which 32 finds as surely (recall@1 1.0 in bench/semantic_index.py
# at 10,000 x 1,536) in two thirds of the time
_EXPANSION = 32


class Shelf:
    """Answer keys and their unit vectors (all of one dimension: a vector of another, from
    another embedding model, replaces them all), each with its expiry (epoch seconds) and a
    sequence number (its order of arrival, for the Redis mirror)."""

    def __init__(self) -> None:
        self.ndim = 0
        # key -> (id, expiry, seq), oldest first
        self._entries: dict[str, tuple[int, float, int]] = {}
        self._keys: dict[int, str] = {}  # id -> key
        self._next_id = 0
        # small: a matrix, row i the vector of id _row_ids[i]
        self._matrix = np.empty((0, 0), dtype=np.float32)
        self._row_ids: list[int] = []
        self._index: Index | None = None  # large: the HNSW graph instead of the matrix
        # a mirror of a Redis bucket (cache/redis.py): the bucket's epoch and the sequence
        # number of the newest entry copied
        self.epoch = b""
        self.seq = 0
        # a thread is adding a batch (add_many): the event loop leaves the shelf alone
        self.busy = False

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def indexed(self) -> bool:
        return self._index is not None

    def add(self, key: str, vector: bytes, expires: float, seq: int = 0) -> None:
        """Keep `vector` (packed, unit length) as the way to `key` until `expires`; it is the
        newest (an earlier vector of the key is replaced)."""
        array = vector_array(vector)
        if array.size == 0:
            return
        if array.size != self.ndim:
            self._reset(array.size)
        self.discard(key)
        uid = self._next_id
        self._next_id += 1
        self._entries[key] = (uid, expires, seq)
        self._keys[uid] = key
        if self._index is not None:
            self._index.add(uid, array, threads=1)
            return
        self._matrix = np.vstack([self._matrix, array[None, :]])
        self._row_ids.append(uid)
        if len(self._row_ids) >= INDEXED_FROM:
            self._build_index()

    def add_many(self, entries: list[tuple[str, bytes, float, int]]) -> None:
        """`add` each (key, vector, expiry, seq), in order: the mirror's catch-up, run on a
        thread (usearch lets go of the GIL while it inserts: up to a few ms a vector of
        1,536 dimensions into a large graph, too long for the event loop by the hundred)."""
        for key, vector, expires, seq in entries:
            self.add(key, vector, expires, seq)

    def discard(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is None:
            return
        uid = found[0]
        del self._keys[uid]
        if self._index is not None:
            self._index.remove(uid)  # (usearch reuses the slot: no compaction needed)
            return
        row = self._row_ids.index(uid)
        last = len(self._row_ids) - 1
        if row != last:  # the last row takes the removed one's place
            self._matrix[row] = self._matrix[last]
            self._row_ids[row] = self._row_ids[last]
        self._matrix = self._matrix[:last]
        self._row_ids.pop()

    def drop_oldest(self, count: int) -> None:
        """Discard the `count` oldest entries (the bound of a context)."""
        for key in list(self._entries)[: max(0, count)]:
            self.discard(key)

    def drop_before(self, seq: int) -> None:
        """Discard the entries older than sequence number `seq` (the mirror of a bucket
        whose oldest entries Redis evicted)."""
        doomed = []
        for key, (_, _, entry_seq) in self._entries.items():
            if entry_seq >= seq:
                break
            doomed.append(key)
        for key in doomed:
            self.discard(key)

    def nearest(self, vector: bytes, now: float) -> Match | None:
        """The unexpired vector most similar to `vector` (packed), or None; the expired ones
        met on the way are discarded. A vector of other dimensions matches nothing."""
        query = vector_array(vector)
        if not self._entries or query.size != self.ndim:
            return None
        for round_ in range(2):
            for uid, similarity in self._candidates(query):
                key = self._keys.get(uid)
                if key is None:
                    continue
                if self._entries[key][1] > now:
                    return Match(key, similarity)
                self.discard(key)
            if round_ == 0 and self._entries:
                # the nearest had all expired: sweep every expired one (one pass, not a
                # round of candidates per expired vector), then the live ones decide
                self._sweep(now)
        return None

    def _candidates(self, query: np.ndarray) -> list[tuple[int, float]]:
        """Up to _CANDIDATES (id, cosine similarity), nearest first."""
        if self._index is not None:
            found = self._index.search(query, _CANDIDATES, threads=1)
            count = len(found)
            return [
                (int(k), 1.0 - float(d))
                for k, d in zip(found.keys[:count], found.distances[:count], strict=True)
            ]
        scores = self._matrix @ query
        if scores.size <= _CANDIDATES:
            order = np.argsort(-scores)
        else:
            top = np.argpartition(-scores, _CANDIDATES)[:_CANDIDATES]
            order = top[np.argsort(-scores[top])]
        return [(self._row_ids[i], float(scores[i])) for i in order]

    def _sweep(self, now: float) -> None:
        """Discard every expired entry."""
        doomed = [key for key, (_, expires, _) in self._entries.items() if expires <= now]
        for key in doomed:
            self.discard(key)

    def _build_index(self) -> None:
        # imported here, when a context first grows large, not with the gateway: usearch's
        # extension carries its own C++ runtime, and a llama.cpp model loaded after it fails
        # (std::bad_cast in its tokenizer). Local models load at start-up, before any lookup.
        from usearch.index import Index

        index = Index(ndim=self.ndim, metric="cos", dtype="f16", expansion_search=_EXPANSION)
        index.add(np.asarray(self._row_ids, dtype=np.uint64), self._matrix, threads=1)
        self._index = index
        self._matrix = np.empty((0, self.ndim), dtype=np.float32)
        self._row_ids = []

    def _reset(self, ndim: int) -> None:
        self.ndim = ndim
        self._entries.clear()
        self._keys.clear()
        self._index = None
        self._matrix = np.empty((0, ndim), dtype=np.float32)
        self._row_ids = []
