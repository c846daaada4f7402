"""The semantic cache's vector stores on their own, with the real usearch index and the real
Redis: a context past INDEXED_FROM vectors (an HNSW index) still finds the nearest, expired
and evicted vectors are never found, and each process's mirror of a Redis bucket follows
what other processes add, evict and clear, copying only what it lacks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis

from tests.services import redis_url
from turnout.cache.redis import RedisBackend, RedisVectors
from turnout.cache.shelf import INDEXED_FROM, Shelf
from turnout.cache.shelves import MemoryVectors, Shelves
from turnout.cache.vectors import pack, vector_array

DIMENSIONS = 64
BUCKET = "r0ute:context"


def vectors(count: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [pack(rng.standard_normal(DIMENSIONS).tolist()) for _ in range(count)]


def near(vector: bytes, seed: int = 1) -> bytes:
    """A vector about 0.98 similar to `vector` (a paraphrase's)."""
    noise = np.random.default_rng(seed).standard_normal(DIMENSIONS)
    noise *= 0.2 / np.linalg.norm(noise)
    return pack((vector_array(vector) + noise).tolist())


@pytest.mark.parametrize("count", [3, INDEXED_FROM + 50], ids=["matrix", "hnsw"])
def test_a_shelf_finds_the_nearest_unexpired_vector(count) -> None:
    shelf, stored, now = Shelf(), vectors(count), time.time()
    for i, vector in enumerate(stored):
        shelf.add(f"k{i}", vector, now + 60)
    assert shelf.indexed == (count >= INDEXED_FROM)
    for i in (0, count // 2, count - 1):
        match = shelf.nearest(near(stored[i]), now)
        assert match is not None and match.key == f"k{i}"
        assert match.similarity == pytest.approx(0.98, abs=0.01)
    # gone: a discarded vector, the oldest ones, every one once expired
    shelf.discard("k1")
    assert shelf.nearest(stored[1], now).key != "k1"  # type: ignore[union-attr]
    shelf.drop_oldest(1)
    assert len(shelf) == count - 2 and shelf.nearest(stored[0], now).key != "k0"  # type: ignore[union-attr]
    assert shelf.nearest(stored[2], now + 61) is None and len(shelf) == 0


def test_an_expired_nearest_gives_way_to_the_next() -> None:
    shelf, now = Shelf(), time.time()
    [target] = vectors(1)
    shelf.add("old", target, now + 1)
    shelf.add("newer", near(target), now + 60)
    assert shelf.nearest(target, now).key == "old"  # type: ignore[union-attr]
    assert shelf.nearest(target, now + 2).key == "newer"  # type: ignore[union-attr]
    assert len(shelf) == 1


def test_a_vector_of_other_dimensions_matches_nothing_and_replaces_the_old_model() -> None:
    shelf, now = Shelf(), time.time()
    shelf.add("a", vectors(1)[0], now + 60)
    other = pack([1.0, 0.0, 0.0])
    assert shelf.nearest(other, now) is None
    shelf.add("b", other, now + 60)  # the embeddings route's model changed
    assert len(shelf) == 1 and shelf.nearest(other, now).key == "b"  # type: ignore[union-attr]


async def test_memory_vectors_keep_max_vectors_per_context_and_a_total_over_all() -> None:
    store = MemoryVectors(Shelves(max_buckets=10, max_total=INDEXED_FROM + 10))
    stored = vectors(INDEXED_FROM + 5)
    for i, vector in enumerate(stored):
        await store.add(BUCKET, f"k{i}", vector, 60, limit=INDEXED_FROM)
    assert (await store.nearest(BUCKET, stored[0])).key != "k0"  # type: ignore[union-attr]
    assert (await store.nearest(BUCKET, stored[-1])).key == f"k{len(stored) - 1}"  # type: ignore[union-attr]
    # other contexts past the total: the least recently used one goes
    for i, vector in enumerate(vectors(11, seed=5)):
        await store.add(f"r0ute:other{i}", f"o{i}", vector, 60, limit=10)
    assert store.shelves.total <= INDEXED_FROM + 10
    assert await store.nearest(BUCKET, stored[-1]) is None
    assert await store.clear("r0ute") == 10 and store.shelves.total == 0


@pytest.fixture
async def redis_pair() -> AsyncIterator[tuple[RedisVectors, RedisVectors, str]]:
    """Two processes' RedisVectors (each its own connection and mirrors) on one prefix."""
    prefix = f"turnout-test-{uuid.uuid4().hex[:8]}"
    backends = [RedisBackend(redis_url(), prefix) for _ in range(2)]
    for backend in backends:
        await backend.start()
    try:
        yield RedisVectors(backends[0], prefix), RedisVectors(backends[1], prefix), prefix
    finally:
        store = redis.Redis.from_url(redis_url())
        for key in store.scan_iter(match=f"{prefix}:*"):
            store.delete(key)
        store.close()
        for backend in backends:
            await backend.close()


async def test_a_mirror_copies_only_what_it_lacks(redis_pair) -> None:
    writer, reader, _ = redis_pair
    stored = vectors(INDEXED_FROM + 100)
    for i, vector in enumerate(stored[:10]):
        await writer.add(BUCKET, f"k{i}", vector, 60, limit=10_000)
    assert (await reader.nearest(BUCKET, near(stored[3]))).key == "k3"  # type: ignore[union-attr]
    shelf = reader.mirrors.get(BUCKET)
    assert shelf is not None and (len(shelf), shelf.seq) == (10, 10)
    for i, vector in enumerate(stored[10:], start=10):
        await writer.add(BUCKET, f"k{i}", vector, 60, limit=10_000)
    # a lookup copies at most a batch of the news, the same shelf growing: never all again
    await reader.nearest(BUCKET, stored[0])
    assert reader.mirrors.get(BUCKET) is shelf and len(shelf) == 10 + 128
    while shelf.seq < len(stored):
        await reader.nearest(BUCKET, stored[0])
    assert len(shelf) == len(stored) and shelf.indexed
    assert (await reader.nearest(BUCKET, near(stored[-1]))).key == f"k{len(stored) - 1}"  # type: ignore[union-attr]


async def test_a_mirror_drops_what_redis_evicted_expired_or_cleared(redis_pair) -> None:
    writer, reader, prefix = redis_pair
    stored = vectors(6)
    for i, vector in enumerate(stored[:3]):
        await writer.add(BUCKET, f"k{i}", vector, 60, limit=3)
    assert (await reader.nearest(BUCKET, stored[0])).key == "k0"  # type: ignore[union-attr]
    # another process's additions push the oldest out of the bucket: out of the mirror too
    await writer.add(BUCKET, "k3", stored[3], 60, limit=3)
    match = await reader.nearest(BUCKET, stored[0])
    assert match is not None and match.key != "k0" and len(reader.mirrors.get(BUCKET)) == 3  # type: ignore[arg-type]
    # a vector that expired is never found (its field is still in the hash, and copied)
    await writer.add(BUCKET, "brief", stored[4], 0.2, limit=10)
    await writer.add(BUCKET, "keeper", stored[5], 60, limit=10)  # (the hash lives on)
    assert (await reader.nearest(BUCKET, stored[4])).key == "brief"  # type: ignore[union-attr]
    await asyncio.sleep(0.3)
    assert (await reader.nearest(BUCKET, stored[4])).key != "brief"  # type: ignore[union-attr]
    # a clear by another process: the bucket is gone, and so is the mirror
    assert await writer.clear("r0ute") == 1
    assert await reader.nearest(BUCKET, stored[3]) is None
    assert reader.mirrors.get(BUCKET) is None
    # the bucket made again (another epoch): the mirror starts afresh, nothing old in it
    await writer.add(BUCKET, "again", stored[1], 60, limit=3)
    assert (await reader.nearest(BUCKET, stored[3])).key == "again"  # type: ignore[union-attr]
    assert len(reader.mirrors.get(BUCKET)) == 1  # type: ignore[arg-type]
    store = redis.Redis.from_url(redis_url())
    try:
        assert sorted(store.keys(f"{prefix}:cachevec:*")) == [
            f"{prefix}:cachevec:{BUCKET}".encode(),
            f"{prefix}:cachevec:{BUCKET}#order".encode(),
        ]
    finally:
        store.close()


@pytest.mark.parametrize("count", [10, INDEXED_FROM + 10], ids=["matrix", "hnsw"])
def test_when_the_nearest_have_all_expired_a_live_one_further_away_is_found(count) -> None:
    shelf, now = Shelf(), time.time()
    [target] = vectors(1)
    for i in range(count - 1):  # the nearest ones, all expiring first
        shelf.add(f"near{i}", near(target, seed=i), now + 1)
    far = pack((vector_array(target) + vector_array(vectors(1, seed=99)[0])).tolist())
    shelf.add("far", far, now + 60)
    match = shelf.nearest(target, now + 2)
    assert match is not None and match.key == "far" and len(shelf) == 1
