"""Replaying captured requests against a candidate model: what `turnout replay` runs.

Each captured request (a route's `capture:` file, redacted when it was written) is sent to the
candidate alone, under the route's output guard and schema, through the same scheduler as a
client's request, and its answer is set beside the recorded one: whether it passed the guard,
its latency and cost against the recorded request's (from the ledger), and how much the two
answers agree (rollouts/shadow.py's measure). Replays are real, paid calls: each is ledgered
as route `<route>:replay`, dialect `replay`, with no key."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from turnout.accounting.records import LedgerRow
from turnout.config.schema import RetryConfig
from turnout.events import RequestFinished
from turnout.execute import AllTargetsFailed, PassThroughError
from turnout.gateway.core import Gateway
from turnout.gateway.exchange import next_request_id
from turnout.model import Request, Usage
from turnout.rollouts.judge import p95
from turnout.rollouts.shadow import agreement
from turnout.routing import Plan

_ONCE = RetryConfig(attempts=1)
DISAGREE_BELOW = 0.5  # an answer agreeing less than this with the recorded one is shown


@dataclass(slots=True)
class Replayed:
    """One captured request and what the candidate did with it."""

    id: str  # the recorded request's ledger id
    prompt: str  # its last user message, for the report
    recorded: str | None  # the recorded answer's text (tool calls as their JSON)
    answer: str | None  # the candidate's, or None when it failed
    failure: str | None  # why it failed: invalid_output(json), server_error(500), ...
    latency: float  # seconds, the candidate's
    cost_usd: float
    recorded_latency: float | None  # from the ledger row, when it is still there
    recorded_cost_usd: float | None
    agreement: float | None = None


@dataclass(slots=True)
class ReplayReport:
    route: str
    candidate: str
    results: list[Replayed] = field(default_factory=list)

    def summary(self, examples: int = 5) -> dict[str, Any]:
        n = len(self.results)
        ok = [r for r in self.results if r.failure is None]
        invalid = [r for r in self.results if (r.failure or "").startswith("invalid_output")]
        latencies = [r.latency for r in ok]
        recorded = [r.recorded_latency for r in self.results if r.recorded_latency is not None]
        agreeing = [r.agreement for r in ok if r.agreement is not None]
        disagreeing = [
            r for r in self.results if r.failure or (r.agreement or 0.0) < DISAGREE_BELOW
        ]
        return {
            "route": self.route,
            "candidate": self.candidate,
            "requests": n,
            "success_rate": _ratio(len(ok), n),
            "invalid_output_rate": _ratio(len(invalid), n),
            "latency_p50_ms": _ms(_median(latencies)),
            "latency_p95_ms": _ms(p95(latencies)),
            "recorded_latency_p50_ms": _ms(_median(recorded)),
            "recorded_latency_p95_ms": _ms(p95(recorded)),
            "cost_usd": round(sum(r.cost_usd for r in self.results), 8),
            "recorded_cost_usd": round(sum(r.recorded_cost_usd or 0.0 for r in self.results), 8),
            "agreement": round(sum(agreeing) / len(agreeing), 4) if agreeing else None,
            "disagreements": [dataclasses.asdict(r) for r in disagreeing[:examples]],
        }


async def replay(
    gateway: Gateway,
    route: str,
    candidate: str,
    captured: list[dict[str, Any]],
    recorded: dict[str, LedgerRow],
    concurrency: int = 4,
) -> ReplayReport:
    """Send each captured request to `candidate` (a model of the config) under `route`'s
    guard; `recorded`: the ledger rows of the captured requests, by id."""
    runtime = gateway.runtime
    plan, forced = runtime.plan(route), runtime.plan(candidate)
    if plan is None or plan.forced:
        raise ValueError(f"{route!r} is not a route of this config")
    if forced is None or not forced.forced:
        raise ValueError(f"{candidate!r} is not a model of this config")
    target = forced.targets[0]
    candidate_plan = dataclasses.replace(
        plan, targets=(target,), retry=_ONCE, stale_max_age=None, queue_max_wait=None
    )
    report = ReplayReport(route, candidate)
    limit = asyncio.Semaphore(concurrency)

    async def one(line: dict[str, Any]) -> Replayed:
        async with limit:
            return await _replay_one(gateway, candidate_plan, line, recorded.get(line["id"]))

    report.results = list(await asyncio.gather(*(one(line) for line in captured)))
    return report


async def _replay_one(
    gateway: Gateway, plan: Plan, line: dict[str, Any], recorded: LedgerRow | None
) -> Replayed:
    target = plan.targets[0]
    asked = line["request"]
    request = Request(
        model=target.name,
        messages=asked["messages"],
        tools=asked.get("tools"),
        tool_choice=asked.get("tool_choice"),
        response_format=asked.get("response_format"),
        temperature=asked.get("temperature"),
        max_tokens=asked.get("max_tokens"),
    )
    row = LedgerRow(
        id=next_request_id(),
        started_at=time.time(),
        route=f"{plan.route}:replay",
        dialect="replay",
        stream=False,
        status=500,
        outcome="error",
    )
    started, usage = time.perf_counter(), Usage()
    answer, failure = None, None
    try:
        completion = await gateway.scheduler.complete(plan, request)
        answer = _text(completion.response.content, completion.response.tool_calls)
        usage = completion.response.usage
        row.status, row.outcome = 200, "ok"
    except (AllTargetsFailed, PassThroughError) as exc:
        failure = exc.attempts[-1].reason if exc.attempts else str(exc)
        row.error = failure
        row.attempts = [{"model": a.model, "reason": a.reason} for a in exc.attempts]
    row.latency_ms = (time.perf_counter() - started) * 1000
    row.model, row.provider = target.name, target.provider.name
    gateway.accounting.price(row, target.price, usage, None)
    gateway.bus.publish(RequestFinished(row))
    said = line.get("response") or {}
    before = _text(said.get("content"), said.get("tool_calls") or [])
    json_mode = request.wants_json or plan.output_schema is not None
    return Replayed(
        id=line["id"],
        prompt=_last_user(request.messages)[:300],
        recorded=before,
        answer=answer,
        failure=failure,
        latency=row.latency_ms / 1000,
        cost_usd=row.cost_usd,
        recorded_latency=recorded.latency_ms / 1000 if recorded else None,
        recorded_cost_usd=recorded.cost_usd if recorded else None,
        agreement=agreement(before, answer, json_mode) if before and answer else None,
    )


def _text(content: str | None, tool_calls: list[Any]) -> str | None:
    if content:
        return content
    calls = [
        f"{c['name'] if isinstance(c, dict) else c.name}"
        f"({c['arguments'] if isinstance(c, dict) else c.arguments})"
        for c in tool_calls
    ]
    return "; ".join(calls) or None


def _last_user(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
