"""The sim's mutable state: each model's behaviour, seeded generator and counters."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from turnout import clock
from turnout.sim import wire
from turnout.sim.behaviour import Fault, FaultTable, fault_table, model_rng
from turnout.sim.content import split_reply
from turnout.sim.schema import SimBehaviour, SimOutage
from turnout.sim.ttft import draw_ttft, heavy_tailed


@dataclass(slots=True)
class Draw:
    fault: Fault
    status: int
    ttft: float  # seconds to wait before the first token


@dataclass(slots=True)
class ModelState:
    name: str
    behaviour: SimBehaviour
    seed: int
    rng: random.Random = field(init=False)
    ttft_rng: random.Random = field(init=False)  # heavy-tailed TTFT's own draws (sim/ttft.py)
    # derived from the behaviour once, not per request
    table: FaultTable = field(init=False)
    tokens: list[str] = field(init=False)
    headers: dict[str, str] = field(init=False)  # sent with every answer
    requests: int = field(default=0, init=False)
    statuses: Counter[str] = field(default_factory=Counter, init=False)
    faults: Counter[str] = field(default_factory=Counter, init=False)
    window: tuple[float, int] = field(default=(0.0, 0), init=False)  # (start, requests in it)

    def __post_init__(self) -> None:
        self.rng = model_rng(self.seed, self.name)
        self.ttft_rng = model_rng(self.seed, self.name + "/ttft")
        self.configure(self.behaviour)

    def configure(self, behaviour: SimBehaviour) -> None:
        """Swap the behaviour, keeping the generator and counters running."""
        self.behaviour = behaviour
        self.table = fault_table(behaviour)
        self.tokens = split_reply(behaviour.reply)
        self.headers = {}
        if behaviour.ratelimit_remaining is not None:
            self.headers = {
                "x-ratelimit-limit-requests": str(max(behaviour.ratelimit_remaining, 1)),
                "x-ratelimit-remaining-requests": str(behaviour.ratelimit_remaining),
                "x-ratelimit-reset-requests": wire.duration_text(behaviour.ratelimit_reset),
            }

    def take_window(self, now: float) -> bool:
        """An enforced rate limit (`ratelimit_limit`): whether this request fits in the
        current window; the headers sent with answers then say what is left of it."""
        limit, span = self.behaviour.ratelimit_limit, self.behaviour.ratelimit_reset
        if limit is None:
            return True
        start = now - now % span
        used = self.window[1] if self.window[0] == start else 0
        fits = used < limit
        used += fits
        self.window = (start, used)
        self.headers = {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(limit - used),
            "x-ratelimit-reset-requests": wire.duration_text(start + span - now),
        }
        return fits

    def window_left(self, now: float) -> tuple[int, int, float]:
        """The enforced window as `take_window(now)` left it: its limit, the requests left in
        it and the seconds to its reset (for a dialect that tells them in its own headers)."""
        limit, span = self.behaviour.ratelimit_limit or 0, self.behaviour.ratelimit_reset
        start, used = self.window
        return limit, max(limit - used, 0), start + span - now

    def reset(self, seed: int) -> None:
        self.seed = seed
        self.rng = model_rng(seed, self.name)
        self.ttft_rng = model_rng(seed, self.name + "/ttft")
        self.requests = 0
        self.statuses.clear()
        self.faults.clear()

    def draw(self, wants_json: bool) -> Draw:
        """Exactly two draws per request, whatever the outcome, so sequences stay aligned."""
        roll = self.rng.random()
        jitter = self.rng.uniform(-1.0, 1.0)
        behaviour = self.behaviour
        ttft = max(0.0, behaviour.ttft * (1.0 + behaviour.ttft_jitter * jitter))
        if heavy_tailed(behaviour):
            ttft = draw_ttft(behaviour, ttft, self.ttft_rng)
        if wants_json and behaviour.json_error_status is not None:
            return Draw(Fault.ERROR, behaviour.json_error_status, ttft)
        for threshold, fault, status in self.table:
            if roll < threshold:
                if fault is Fault.MALFORMED and not wants_json:
                    break  # only a JSON-mode answer can be malformed
                return Draw(fault, status, ttft)
        return Draw(Fault.NONE, 200, ttft)

    def rate_limit_headers(self) -> dict[str, str]:
        retry_after = self.behaviour.retry_after
        if self.behaviour.ratelimit_limit is not None:  # the window's own reset
            return {**self.headers, "x-ratelimit-remaining-requests": "0"}
        headers = {
            **self.headers,
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": wire.duration_text(retry_after or 1.0),
        }
        if retry_after is not None:
            headers["retry-after"] = wire.seconds_text(retry_after)
        return headers

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "statuses": dict(self.statuses),
            "faults": dict(self.faults),
        }


class SimState:
    def __init__(self, behaviours: dict[str, SimBehaviour], seed: int) -> None:
        self.seed = seed
        self.models = {name: ModelState(name, b, seed) for name, b in behaviours.items()}
        self.unknown: Counter[str] = Counter()  # requests for models the sim does not have
        self.started = clock.monotonic()
        self.serial = 0  # for ids: deterministic, unlike random hex
        self.tasks: set[asyncio.Task[Any]] = set()  # in-flight handlers, cancelled on shutdown

    def set_behaviour(self, name: str, behaviour: SimBehaviour) -> None:
        model = self.models.get(name)
        if model is None:
            self.models[name] = ModelState(name, behaviour, self.seed)
        else:
            model.configure(behaviour)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.seed = seed
        for model in self.models.values():
            model.reset(self.seed)
        self.unknown.clear()
        self.started = clock.monotonic()
        self.serial = 0

    def elapsed(self) -> float:
        return clock.monotonic() - self.started

    def outage_status(self, model: ModelState) -> int | None:
        outage = self.outage(model)
        return None if outage is None else outage.status

    def outage(self, model: ModelState) -> SimOutage | None:
        """The outage window the model is in now, if any."""
        outages = model.behaviour.outages
        if not outages:
            return None
        now = self.elapsed()
        for outage in outages:
            if outage.start <= now < outage.end:
                return outage
        return None

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial

    def stats(self) -> dict[str, Any]:
        stats = {name: model.stats() for name, model in self.models.items()}
        for name, count in self.unknown.items():
            stats.setdefault(name, {"requests": count, "statuses": {"404": count}, "faults": {}})
        return stats


STATE = web.AppKey("turnout_sim_state", SimState)
