"""The semantic cache's vectors: per conversation context (a bucket), the unit vectors of the
last user messages whose answers are stored, each with the key of its answer, searched for
the most similar by cosine similarity.

A bucket holds at most `max_vectors` (oldest out first) and each vector lives as long as its
answer (the route's TTL). In process (cache/shelves.py: a matrix, or a usearch HNSW index
for a large bucket, cache/shelf.py); in Redis (cache/redis.py) when the state backend is
Redis, so that every replica finds what any other stored, each process searching a local
mirror of it.

This module: the interface, and the vectors' two forms (packed bytes, a numpy array)."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from turnout import clock

_HEADER = struct.Struct("<d")  # a stored vector: its expiry (epoch seconds), then float32s
_FLOAT32 = np.dtype("<f4")


@dataclass(slots=True, frozen=True)
class Match:
    key: str  # the answer's `{route tag}:{digest}`
    similarity: float


class Vectors(Protocol):
    async def nearest(self, bucket: str, vector: bytes) -> Match | None:
        """The stored vector of `bucket` most similar to `vector` (packed), or None."""
        ...

    async def add(self, bucket: str, key: str, vector: bytes, ttl: float, limit: int) -> None:
        """Keep `vector` for `ttl` seconds as the way to `key`; at most `limit` per bucket."""
        ...

    async def clear(self, tag: str) -> int:
        """Forget every bucket of the route with this tag; how many buckets there were.
        Raises CacheUnavailable when the shared backend cannot be reached."""
        ...


def pack(vector: list[float]) -> bytes:
    """The vector normalised to length 1, as little-endian float32 (cosine is then a dot
    product); empty bytes for a zero or non-finite vector (nothing to compare)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if not norm or not math.isfinite(norm):
        return b""
    return (np.asarray(vector, dtype=np.float64) / norm).astype(_FLOAT32).tobytes()


def vector_array(raw: bytes) -> np.ndarray:
    """A packed vector as a float32 array (empty for bytes that are not one)."""
    if len(raw) % 4:
        return np.empty(0, dtype=np.float32)
    return np.frombuffer(raw, dtype=_FLOAT32).astype(np.float32)


def stamped(vector: bytes, ttl: float) -> bytes:
    """The value stored in Redis: the vector's expiry, then the vector."""
    return _HEADER.pack(clock.now() + ttl) + vector


def unstamped(value: bytes) -> tuple[float, bytes] | None:
    """(expiry, vector) of a stored value; None for a value this version did not write."""
    if len(value) < _HEADER.size or (len(value) - _HEADER.size) % 4:
        return None
    return _HEADER.unpack_from(value)[0], value[_HEADER.size :]
