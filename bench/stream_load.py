"""Streaming load client: K concurrent `stream: true` chat completions, inter-chunk gaps.

Every stream records the arrival time of each content chunk (an SSE event whose first choice
has delta content); the gaps between consecutive content chunks of all streams are pooled.
Prints one JSON object: gap p50/p90/p99/max, time to first chunk, wall time, failures.
A non-empty BENCH_BEARER environment variable is sent as `Authorization: Bearer ...`;
`--max-tokens N` adds `max_tokens` to the request (bench/stream_upstream.py then sends N chunks).

    python bench/stream_load.py --url http://127.0.0.1:18802 --streams 100 --chunks 64
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import orjson
import uvloop

BODY = {
    "model": "chat",
    "stream": True,
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hi."},
    ],
}


@dataclass
class Totals:
    gaps: list[float] = field(default_factory=list)  # seconds
    ttfc: list[float] = field(default_factory=list)  # time to first content chunk, seconds
    chunks: int = 0
    ok: int = 0
    errors: list[str] = field(default_factory=list)


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def is_content_chunk(data: bytes) -> bool:
    obj = orjson.loads(data)
    choices = obj.get("choices") or []
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


async def one_stream(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    expect: int,
    totals: Totals,
    delay: float,
) -> None:
    await asyncio.sleep(delay)  # spread the starts: the connection storm is not what we measure
    start = time.perf_counter()
    times: list[float] = []
    done = False
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            if resp.status != 200:
                text = (await resp.text())[:200]
                totals.errors.append(f"HTTP {resp.status}: {text}")
                return
            async for line in resp.content:
                now = time.perf_counter()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                if is_content_chunk(data):
                    times.append(now)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        totals.errors.append(f"{type(exc).__name__}: {exc}"[:200])
        return
    totals.chunks += len(times)
    if times:
        totals.ttfc.append(times[0] - start)
        totals.gaps.extend(b - a for a, b in itertools.pairwise(times))
    if done and len(times) == expect:
        totals.ok += 1
    else:
        totals.errors.append(f"short stream: {len(times)}/{expect} chunks, [DONE]={done}")


async def run(
    base_url: str, streams: int, expect: int, timeout: float, ramp: float, max_tokens: int
) -> dict[str, object]:
    url = base_url.rstrip("/") + "/v1/chat/completions"
    body = orjson.dumps({**BODY, "max_tokens": max_tokens} if max_tokens else BODY)
    headers = {"Content-Type": "application/json"}
    if bearer := os.environ.get("BENCH_BEARER", ""):
        headers["Authorization"] = f"Bearer {bearer}"
    totals = Totals()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(
            *(
                one_stream(session, url, body, headers, expect, totals, ramp * i / streams)
                for i in range(streams)
            )
        )
        wall = time.perf_counter() - start
    gaps, ttfc = sorted(totals.gaps), sorted(totals.ttfc)
    return {
        "streams": streams,
        "ok": totals.ok,
        "failed": streams - totals.ok,
        "chunks": totals.chunks,
        "gap_p50_ms": percentile(gaps, 50) * 1000,
        "gap_p90_ms": percentile(gaps, 90) * 1000,
        "gap_p99_ms": percentile(gaps, 99) * 1000,
        "gap_max_ms": (gaps[-1] if gaps else 0.0) * 1000,
        "ttfc_p50_ms": percentile(ttfc, 50) * 1000,
        "ttfc_p99_ms": percentile(ttfc, 99) * 1000,
        "wall_s": wall,
        "errors": sorted(set(totals.errors))[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:18802")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument(
        "--chunks", type=int, default=64, help="content chunks each stream must carry"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="per-stream limit, seconds")
    parser.add_argument(
        "--ramp-ms", type=float, default=0.0, help="spread stream starts evenly over this time"
    )
    parser.add_argument("--max-tokens", type=int, default=0, help="send max_tokens (0: none)")
    args = parser.parse_args()
    host = urlsplit(args.url).hostname or ""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        sys.exit(f"refusing to load {host!r}: benchmark traffic stays on loopback")
    result = uvloop.run(
        run(args.url, args.streams, args.chunks, args.timeout, args.ramp_ms / 1000, args.max_tokens)
    )
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
