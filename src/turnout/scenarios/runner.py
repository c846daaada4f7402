"""Runs one scenario in this process: the real gateway (aiohttp app on a localhost port) with
its `sim` providers, a webhook receiver for its alerts, and the traffic script's calls sent by an
aiohttp client at their simulated times, the whole process on a scaled clock (turnout.clock).

At speed N a simulated gap of g seconds is waited as g/N real seconds; request latencies
(TTFT, generation) stay real. The ledger (SQLite in a temporary directory) is the source of
truth for what was served and what it cost; the bus gives the events and alerts raised."""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from turnout import clock
from turnout.accounting.records import LedgerRow
from turnout.accounting.store import make_store
from turnout.config import parse_config
from turnout.config.schema import Config
from turnout.config.sinks import JsonlSinkConfig
from turnout.events import BudgetAlert, HealthChanged, RequestFinished
from turnout.events.kinds import AlertChanged, RolloutChanged
from turnout.gateway import Gateway
from turnout.providers.sim import SimProvider
from turnout.scenarios.catalogue import Scenario
from turnout.scenarios.traffic import Call, Change, prompt_of
from turnout.server import GatewayServer
from turnout.sim.schema import SimBehaviour

WEBHOOK_ENV = "TURNOUT_SCENARIO_WEBHOOK"  # config.yaml's webhook sinks point here
CONCURRENCY = 64  # client requests in flight at once
SEED = 18
# the simulated seconds around each upstream change played in close-up, and how fast: at full
# speed a few ms of real latency are seconds of simulated time, too blurred to time an alert
CLOSE_UP = (120.0, 180.0)
CLOSE_UP_SPEED = 20.0
IDLE = 600.0  # simulated seconds with no traffic beyond this are skipped, not waited


@dataclass(frozen=True, slots=True)
class _Speed:
    factor: float


def _close_ups(changes: list[Change], speed: float) -> list[tuple[float, int, _Speed]]:
    """Speed markers: slow down before each change (merging overlaps), back to `speed` after."""
    spans: list[list[float]] = []
    for at in sorted(c.at for c in changes if c.close_up):
        start, end = at - CLOSE_UP[0], at + CLOSE_UP[1]
        if spans and start <= spans[-1][1]:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    slow = _Speed(min(CLOSE_UP_SPEED, speed))
    markers = []
    for start, end in spans:
        markers += [(max(start, 0.0), 0, slow), (end, 0, _Speed(speed))]
    return markers


@dataclass
class Progress:
    """What the live view shows, updated as the run goes."""

    duration: float = 0.0  # simulated seconds the traffic spans
    planned: int = 0  # calls in the script
    elapsed: float = 0.0  # simulated seconds since the start
    sent: int = 0
    done: int = 0
    failures: int = 0  # client-visible
    served: Counter[str] = field(default_factory=Counter)
    spend_usd: float = 0.0
    alerts: int = 0
    last_change: str = ""


@dataclass
class Run:
    """Everything a run leaves behind, for the report."""

    scenario: Scenario
    config: Config
    speed: float
    real_seconds: float
    rows: list[LedgerRow]  # the ledger, one row per client request
    failures: list[str]  # client-visible failures, one line each
    client_ttft_ms: list[float]  # streams: first content chunk, as the client saw it
    events: list[dict[str, Any]]  # health changes, budget alerts, rollouts: at = sim seconds
    alerts: list[dict[str, Any]]  # AlertChanged, at = simulated seconds from the start
    delivered: int  # webhook posts the receiver got
    changes: dict[str, float]  # change name -> simulated seconds from the start
    start: float  # epoch (simulated) of the start
    # what each `jsonl` sink wrote (sink name -> its events), read before the data dir goes
    sink_events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


async def _webhook_receiver(received: list[dict[str, Any]]) -> tuple[web.AppRunner, str]:
    async def receive(request: web.Request) -> web.Response:
        received.append(orjson.loads(await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/hook"


def _body(call: Call, rng: random.Random) -> dict[str, Any]:
    prompt = call.prompt or prompt_of(call.prompt_tokens, rng)
    body: dict[str, Any] = {
        **call.body,
        "model": call.route,
        "messages": [{"role": "user", "content": _content(prompt, call.images)}],
        "max_tokens": call.max_tokens,
    }
    if call.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _content(prompt: str, images: tuple[str, ...]) -> str | list[dict[str, Any]]:
    """The user message's content: the prompt, with the images as parts after it."""
    if not images:
        return prompt
    parts: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    return parts + [{"type": "image_url", "image_url": {"url": url}} for url in images]


async def _send(
    session: aiohttp.ClientSession, url: str, call: Call, body: dict[str, Any]
) -> tuple[str | None, float | None]:
    """One call: (why it failed as the client saw it, or None; the stream's TTFT in ms)."""
    began = time.perf_counter()
    ttft = None
    try:
        async with session.post(url, json=body, headers=call.headers) as response:
            if response.status != 200:
                text = (await response.text())[:200]
                return f"HTTP {response.status}: {text}", None
            if not call.stream:
                answer = orjson.loads(await response.read())
                if not answer.get("choices"):
                    return "an answer without choices", None
                return _unlike_the_schema(call, answer) or _without_tool_call(call, answer), None
            finished = called = False
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    finished = True
                    continue
                chunk = orjson.loads(data)
                if "error" in chunk:
                    return f"stream error: {str(chunk['error'])[:200]}", ttft
                choices = chunk.get("choices") or []
                if ttft is None and choices and choices[0].get("delta", {}).get("content"):
                    ttft = (time.perf_counter() - began) * 1000
                called = called or bool(choices and choices[0].get("delta", {}).get("tool_calls"))
            if not finished:
                return "the stream ended without [DONE]", ttft
            return (_NO_TOOL_CALL if _needs_tool_call(call) and not called else None), ttft
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
        return f"{type(exc).__name__}: {exc}", ttft


_NO_TOOL_CALL = "a tool-call request answered without a tool call"


def _needs_tool_call(call: Call) -> bool:
    """A call whose client goes on only with a tool call (`tool_choice: required`)."""
    return call.body.get("tool_choice") == "required"


def _without_tool_call(call: Call, answer: dict[str, Any]) -> str | None:
    """For a call that requires a tool call: why its (whole) answer would stall the client's
    agent loop (no tool call in it), or None."""
    if not _needs_tool_call(call):
        return None
    message = answer["choices"][0].get("message") or {}
    return None if message.get("tool_calls") else _NO_TOOL_CALL


def _unlike_the_schema(call: Call, answer: dict[str, Any]) -> str | None:
    """For a call that asked for a JSON schema: why its (whole) answer would break the client
    (not a JSON object, a required field missing), or None. A pipeline's client parses it."""
    spec = (call.body.get("response_format") or {}).get("json_schema") or {}
    required = (spec.get("schema") or {}).get("required")
    if required is None:
        return None
    text = answer["choices"][0].get("message", {}).get("content") or ""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return f"an answer that is not JSON: {text[:80]!r}"
    missing = [name for name in required if not isinstance(value, dict) or name not in value]
    return f"a JSON answer without {len(missing)} required fields" if missing else None


def _apply(gateway: Gateway, change: Change) -> None:
    """A traffic change through the sim's own control: the model's behaviour, swapped."""
    provider = gateway.runtime.providers[change.provider]
    if not isinstance(provider, SimProvider):
        raise TypeError(f"change {change.name!r}: provider {change.provider!r} is not a sim")
    state = provider.sim.state
    current = state.models[change.model].behaviour.model_dump()
    state.set_behaviour(change.model, SimBehaviour.model_validate({**current, **change.behaviour}))


async def run(
    scenario: Scenario,
    speed: float,
    progress: Progress | None = None,
    data_dir: str | None = None,
) -> Run:
    """Plays the scenario at `speed` and returns what happened. Switches this process to
    simulated time (turnout.clock) for good: a process runs one scenario. The ledger is
    written in `data_dir` (kept), else in a temporary directory."""
    rng = random.Random(SEED)
    calls: list[Call] = scenario.traffic.calls(rng)
    changes: list[Change] = list(scenario.traffic.CHANGES)
    progress = progress or Progress()
    progress.duration, progress.planned = float(scenario.traffic.DURATION), len(calls)
    received: list[dict[str, Any]] = []
    receiver, hook = await _webhook_receiver(received)
    os.environ[WEBHOOK_ENV] = hook
    with tempfile.TemporaryDirectory(prefix="turnout-scenario-") as temporary:
        data_dir = data_dir or temporary
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        data = scenario.config_data()
        data["data_dir"] = data_dir
        _files_in(data, Path(data_dir))
        data.setdefault("log_level", "error")
        data.setdefault("auth", {"required": False})
        config = parse_config(data, str(scenario.folder / "config.yaml"))
        clock.run_faster(speed)
        gateway = Gateway(config)
        events: list[dict[str, Any]] = []
        alerts: list[dict[str, Any]] = []
        start = clock.now()  # until time 0, set when the traffic starts

        def heard(event: Any) -> None:
            if isinstance(event, RequestFinished):
                row = event.row
                progress.served[row.model or "none"] += 1
                progress.spend_usd += row.cost_usd
                return
            entry = {"type": type(event).__name__, **_fields(event)}
            entry["at"] = round(event.at - start, 3)
            if isinstance(event, AlertChanged):
                alerts.append(entry)
                progress.alerts += event.firing
            else:
                events.append(entry)

        gateway.bus.subscribe(
            heard,
            kinds=(RequestFinished, AlertChanged, HealthChanged, BudgetAlert, RolloutChanged),
            inline=True,
            name="scenario-runner",
        )
        server = GatewayServer(gateway, "127.0.0.1", 0)
        await server.start()
        began = time.perf_counter()
        # the run's time 0, after the start-up (at full speed its real ms are simulated minutes)
        start, origin = clock.now(), clock.monotonic()
        try:
            url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
            failures, ttfts, changed = await _play(
                gateway, url, calls, changes, rng, progress, origin
            )
        finally:
            await server.close()  # drains the ledger
            await receiver.cleanup()
        real_seconds = time.perf_counter() - began
        rows = await _ledger(Path(data_dir) / "turnout.db")
        sink_events = _jsonl_written(config)
    return Run(
        scenario=scenario,
        config=config,
        speed=speed,
        real_seconds=real_seconds,
        rows=rows,
        failures=failures,
        client_ttft_ms=ttfts,
        events=events,
        alerts=alerts,
        delivered=len(received),
        changes=changed,
        start=start,
        sink_events=sink_events,
    )


def _files_in(data: dict[str, Any], data_dir: Path) -> None:
    """A `jsonl` sink's relative path is taken in the run's data directory, beside the
    ledger: a scenario's event file is the run's, not a file left in the working directory."""
    for sink in data.get("sinks") or []:
        if sink.get("kind") == "jsonl" and not Path(str(sink.get("path", ""))).is_absolute():
            sink["path"] = str(data_dir / str(sink.get("path", "")))


def _jsonl_written(config: Config) -> dict[str, list[dict[str, Any]]]:
    written = {}
    for sink in config.sinks:
        if isinstance(sink, JsonlSinkConfig):
            path = Path(sink.path)
            lines = path.read_bytes().splitlines() if path.is_file() else []
            written[sink.name] = [orjson.loads(line) for line in lines if line.strip()]
    return written


async def _play(
    gateway: Gateway,
    url: str,
    calls: list[Call],
    changes: list[Change],
    rng: random.Random,
    progress: Progress,
    origin: float,
) -> tuple[list[str], list[float], dict[str, float]]:
    """Sends the calls and makes the changes at their simulated times (from `origin`, a
    simulated clock.monotonic())."""
    timeline: list[tuple[float, int, Call | Change | _Speed]] = [(c.at, 1, c) for c in calls]
    timeline += [(c.at, 0, c) for c in changes]  # a change before a call at the same time
    timeline += _close_ups(changes, clock.speed)
    timeline.sort(key=lambda item: (item[0], item[1]))
    failures: list[str] = []
    ttfts: list[float] = []
    changed: dict[str, float] = {}
    slots = asyncio.Semaphore(CONCURRENCY)
    tasks: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, call: Call, body: dict[str, Any]) -> None:
        # the wait for a slot is the client's, never the timeline's: changes stay on time
        async with slots:
            failure, ttft = await _send(session, url, call, body)
        progress.done += 1
        if ttft is not None:
            ttfts.append(ttft)
        if failure is not None:
            progress.failures += 1
            failures.append(f"at {call.at:.0f}s ({call.tag or call.route}): {failure}")

    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for at, _, item in timeline:
            wait = at - (clock.monotonic() - origin)
            if wait > IDLE and not tasks:
                # nothing in flight and nothing due for a while (the night): skip to just before
                clock.advance(wait - IDLE)
                wait = IDLE
            if wait > 0:
                await asyncio.sleep(wait / clock.speed)
            progress.elapsed = clock.monotonic() - origin
            if isinstance(item, _Speed):
                clock.set_speed(item.factor)
                continue
            if isinstance(item, Change):
                _apply(gateway, item)
                changed[item.name] = progress.elapsed
                progress.last_change = item.name
                continue
            body = _body(item, rng)
            progress.sent += 1
            task = asyncio.create_task(one(session, item, body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            progress.elapsed = clock.monotonic() - origin
            await asyncio.wait(set(tasks), timeout=0.1)
        progress.elapsed = clock.monotonic() - origin
    return failures, ttfts, changed


async def _ledger(path: Path) -> list[LedgerRow]:
    store = make_store("sqlite", path=str(path), dsn=None)
    await store.start()
    try:
        return list(await store.rows())
    finally:
        await store.close()


def _fields(event: Any) -> dict[str, Any]:
    """An event's fields as plain data (its slots), for the report."""
    out = {}
    for name in getattr(type(event), "__slots__", ()):
        value = getattr(event, name)
        out[name] = value.value if hasattr(value, "value") else value
    return out
