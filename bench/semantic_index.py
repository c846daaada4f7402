"""The semantic cache's vector lookup at its largest: one context holding `max_vectors`
(10,000) vectors of 1,536 dimensions (text-embedding-3-small's), issue 19.

Times `Vectors.nearest` as the cache calls it, in process (MemoryVectors: an HNSW index,
cache/shelf.py) and with Redis state (RedisVectors: one round trip for what the local
mirror lacks, then the same local search), against the brute force it replaces (numpy's
matrix product; the pure-Python loop before it was slower still). The vectors are synthetic
but clustered like real embeddings (200 topics); each query is a paraphrase of a stored
one (cosine about 0.9), and recall@1 says how often the HNSW search found the exact nearest.

    python bench/semantic_index.py                 # 10,000 x 1,536, memory and Redis
    python bench/semantic_index.py --vectors 2000 --dimensions 256 --no-redis
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid

import numpy as np

from turnout.cache.shelves import MemoryVectors
from turnout.cache.vectors import Vectors, pack

BUCKET = "bench:context"
TTL = 3600.0


def dataset(
    count: int, dimensions: int, queries: int
) -> tuple[list[bytes], list[bytes], list[int]]:
    """(stored vectors, queries, the index of each query's true nearest), packed."""
    rng = np.random.default_rng(0)
    topics = rng.standard_normal((200, dimensions))
    stored = topics[rng.integers(0, 200, count)] + 0.7 * rng.standard_normal((count, dimensions))
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    noise = rng.standard_normal((queries, dimensions))
    noise *= 0.45 / np.linalg.norm(noise, axis=1, keepdims=True)
    sources = rng.integers(0, count, queries)
    asked = stored[sources] + noise
    asked /= np.linalg.norm(asked, axis=1, keepdims=True)
    truth = (stored @ asked.T).argmax(axis=0)
    return [pack(v.tolist()) for v in stored], [pack(q.tolist()) for q in asked], truth.tolist()


async def fill(vectors: Vectors, stored: list[bytes], limit: int) -> float:
    """Add every vector as the cache does; seconds per add."""
    start = time.perf_counter()
    for i, vector in enumerate(stored):
        await vectors.add(BUCKET, f"k{i}", vector, TTL, limit)
    return (time.perf_counter() - start) / len(stored)


async def lookups(
    vectors: Vectors, queries: list[bytes], truth: list[int]
) -> tuple[list[float], float]:
    """Each query's lookup time (seconds), and recall@1."""
    times, hits = [], 0
    for query, nearest in zip(queries, truth, strict=True):
        start = time.perf_counter()
        match = await vectors.nearest(BUCKET, query)
        times.append(time.perf_counter() - start)
        hits += match is not None and match.key == f"k{nearest}"
    return times, hits / len(queries)


def brute(stored: list[bytes], queries: list[bytes]) -> list[float]:
    matrix = np.stack([np.frombuffer(v, dtype="<f4") for v in stored])
    times = []
    for query in queries:
        q = np.frombuffer(query, dtype="<f4")
        start = time.perf_counter()
        int(np.argmax(matrix @ q))
        times.append(time.perf_counter() - start)
    return times


def line(name: str, times: list[float], extra: str = "") -> str:
    ms = sorted(t * 1000 for t in times)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"{name:<34}{statistics.median(ms):>9.3f}{p99:>9.3f}  {extra}"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=10_000)
    parser.add_argument("--dimensions", type=int, default=1536)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    stored, queries, truth = dataset(args.vectors, args.dimensions, args.queries)
    print(f"{args.vectors} vectors of {args.dimensions} dimensions in one context")
    print(f"{'lookup':<34}{'p50 ms':>9}{'p99 ms':>9}")
    print(line("brute force (numpy matrix product)", brute(stored, queries)))

    memory = MemoryVectors()
    per_add = await fill(memory, stored, args.vectors)
    times, recall = await lookups(memory, queries, truth)
    print(
        line(
            "memory (usearch HNSW, f16)",
            times,
            f"recall@1 {recall:.3f}; add {per_add * 1000:.2f} ms",
        )
    )

    if not args.no_redis:
        from turnout.cache.redis import RedisBackend, RedisVectors

        prefix = f"turnout-bench-{uuid.uuid4().hex[:8]}"
        writer_backend, reader_backend = (
            RedisBackend(args.redis, prefix),
            RedisBackend(args.redis, prefix),
        )
        await writer_backend.start()
        await reader_backend.start()
        writer, reader = RedisVectors(writer_backend, prefix), RedisVectors(reader_backend, prefix)
        try:
            await fill(writer, stored, args.vectors)
            start, syncs = time.perf_counter(), 0
            while (shelf := reader.mirrors.get(BUCKET)) is None or len(shelf) < len(stored):
                await reader.nearest(BUCKET, queries[0])  # a cold mirror catches up
                syncs += 1
            warm = time.perf_counter() - start
            times, recall = await lookups(reader, queries, truth)
            note = f"recall@1 {recall:.3f}; cold mirror filled in {syncs} lookups, {warm:.1f} s"
            print(line("redis (one round trip + mirror)", times, note))
        finally:
            redis = writer_backend._redis
            if redis is not None:
                async for key in redis.scan_iter(match=f"{prefix}:*"):
                    await redis.unlink(key)
            await writer_backend.close()
            await reader_backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
