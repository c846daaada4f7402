"""Event-loop lag: a probe task in the server's own loop that asks to wake every millisecond
and records how late it woke. Whatever holds the loop (a tokenizer run on it, a big JSON
parse) shows up as lag, and every request on that loop waits as long.

Two ways in, both writing the samples as JSON (`[[unix time, lag s], ...]`) to the file named
by `BENCH_LAG_FILE` when the process exits:

- turnout: `TURNOUT_PLUGINS=loop_lag` (bench/ on PYTHONPATH); the probe starts with the
  first event the bus delivers (the warm-up request), in the gateway's loop.
- the floor: `python bench/loop_lag.py --port P --upstream URL` runs bench/floor_proxy.py
  with the probe in its loop.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import json
import os
import time

INTERVAL = 0.001  # seconds the probe asks to sleep
SAMPLES: list[tuple[float, float]] = []
# the garbage collector's passes over 1 ms, [unix time, generation, seconds]: a full pass
# over a large heap is a loop stall no request caused
COLLECTIONS: list[tuple[float, int, float]] = []
_GC_STARTED: list[float] = []


def _time_collections(phase: str, info: dict) -> None:
    if phase == "start":
        _GC_STARTED[:] = [time.perf_counter()]
    elif _GC_STARTED:
        took = time.perf_counter() - _GC_STARTED[0]
        if took > 0.001:
            COLLECTIONS.append((time.time(), info["generation"], took))


_TASK: list[asyncio.Task[None]] = []


async def probe() -> None:
    # perf_counter, not loop.time(): uvloop's clock moves in whole milliseconds
    while True:
        asked = time.perf_counter()
        await asyncio.sleep(INTERVAL)
        SAMPLES.append((time.time(), max(time.perf_counter() - asked - INTERVAL, 0.0)))


def start_probe() -> None:
    """Start the probe in the running loop (once)."""
    if not _TASK:
        _TASK.append(asyncio.get_running_loop().create_task(probe()))
        gc.callbacks.append(_time_collections)


@atexit.register
def _dump() -> None:
    path = os.environ.get("BENCH_LAG_FILE")
    if path and SAMPLES:
        with open(path, "w") as fh:
            json.dump(SAMPLES, fh)
        with open(f"{path}.gc", "w") as fh:
            json.dump(COLLECTIONS, fh)


try:
    from turnout.events import RequestFinished
    from turnout.events.plugins import register_subscriber
except ImportError:  # the floor's process has no turnout to hook into (or an old revision)
    register_subscriber = None

if register_subscriber is not None:

    @register_subscriber
    def _attach(bus) -> None:
        def first_event(_: object) -> None:
            try:
                start_probe()
            except RuntimeError:  # (no running loop: a synchronous caller; next event)
                pass

        bus.subscribe(first_event, kinds=(RequestFinished,), inline=True, name="bench-loop-lag")


def main() -> None:
    import uvloop

    from floor_proxy import serve

    parser = argparse.ArgumentParser(description="the floor proxy with the loop-lag probe")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()

    async def run() -> None:
        start_probe()
        await serve(args.host, args.port, args.upstream)

    uvloop.run(run())


if __name__ == "__main__":
    main()
