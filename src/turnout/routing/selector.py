"""Per request: which of a plan's targets can serve it, and in what order.

Capability filter (tools, JSON, vision, context window), the client's exclusions, then the
route's policy and session stickiness. Filtered targets are reported as skipped with their
reason; a request no target can serve is the client's problem (400), not an outage (503)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from dataclasses import dataclass

from turnout.config.schema import Config
from turnout.health import HealthEngine
from turnout.model import Attempt, Request
from turnout.model.tokens import estimate_prompt_tokens
from turnout.routing import policies
from turnout.routing.capabilities import Needs, prompt_tokens, prompt_upper_bound
from turnout.routing.planner import Plan, Target
from turnout.routing.sessions import SessionMap

POLICIES = ("priority", "weighted", "cheapest", "fastest")
_COUNT_OFF_LOOP = 256 * 1024  # prompts larger than this (bytes) are counted on a thread


class NoCapableTarget(Exception):
    """No target of the plan can serve this request at all."""

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


@dataclass(slots=True)
class Selection:
    plan: Plan  # with its targets in the order to try them
    skipped: list[Attempt]


class Selector:
    def __init__(self, config: Config, health: HealthEngine, seed: int | None = None) -> None:
        self.config = config
        self.health = health
        self.rng = random.Random(seed)
        self.sessions = {
            name: SessionMap(route.consistency.ttl)
            for name, route in config.routes.items()
            if route.consistency
        }

    async def select(self, plan: Plan, request: Request) -> Selection:
        if plan.output_schema is not None and request.response_format is None:
            # the route wants schema-valid JSON: ask every model for it, then check it
            request.response_format = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": plan.output_schema, "strict": True},
            }
        skipped: list[Attempt] = []
        targets = list(plan.targets)
        if request.exclude:
            targets = [t for t in targets if t.name not in request.exclude]
            skipped += [Attempt(t.name, "excluded") for t in plan.targets if t not in targets]
        needs = Needs.of(request)
        if needs is not None:
            targets = self._capable(targets, needs, skipped)
        prompt = await self._check_context(plan, targets, request, skipped)
        if skipped:
            targets = [t for t in targets if t.name not in {a.model for a in skipped}]
        if not targets:
            raise self._nothing_can(plan, skipped)
        route = self.config.routes.get(plan.route) if not plan.forced else None
        if route is not None:
            policy = request.policy or route.policy  # an admin key may override it
            targets = self._policy_order(policy, route.weights, targets, request, prompt)
            if route.consistency:
                targets = self._sticky(plan.route, route.consistency.prefer, targets, request)
        if tuple(targets) == plan.targets:
            return Selection(plan, skipped)  # the common case: nothing to rebuild
        return Selection(dataclasses.replace(plan, targets=tuple(targets)), skipped)

    def remember(self, route: str, request: Request, model: str) -> None:
        """The session's model is the one that just answered: a failover moves it whole."""
        sessions = self.sessions.get(route)
        key = request.session or request.user
        if sessions is not None and key:
            sessions.put(route, key, model)

    # --- filters -----------------------------------------------------------------------------

    def _capable(self, targets: list[Target], needs: Needs, skipped: list[Attempt]) -> list[Target]:
        # JSON: models that declare it; if none does, any model, checked by the output guard
        json_ok = needs.json and any("json" in t.model.supports for t in targets)
        kept = []
        for target in targets:
            supports = target.model.supports
            missing = [
                name
                for name, needed in (
                    ("tools", needs.tools),
                    ("json", json_ok),
                    ("vision", needs.vision),
                )
                if needed and name not in supports
            ]
            if missing:
                skipped.append(Attempt(target.name, f"capability(no {', no '.join(missing)})"))
            else:
                kept.append(target)
        return kept

    async def _check_context(
        self, plan: Plan, targets: list[Target], request: Request, skipped: list[Attempt]
    ) -> int | None:
        """Skip targets whose context window cannot hold prompt + max_tokens. Returns the
        prompt's token count when it had to be counted."""
        windows = [t.model.context_window for t in targets if t.model.context_window]
        if not windows:
            return None
        output = request.max_tokens or 0
        bound = prompt_upper_bound(request)
        if bound + output <= min(windows):
            return None  # fits everywhere, proven without counting
        if bound > _COUNT_OFF_LOOP:
            tokens = await asyncio.to_thread(prompt_tokens, request)
        else:
            tokens = prompt_tokens(request)
        for target in targets:
            window = target.model.context_window
            if window and tokens + output > window:
                skipped.append(Attempt(target.name, f"context_length({tokens}+{output}>{window})"))
        return tokens

    def _nothing_can(self, plan: Plan, skipped: list[Attempt]) -> NoCapableTarget:
        detail = "; ".join(f"{a.model}: {a.reason}" for a in skipped)
        if skipped and all(a.reason.startswith("context_length") for a in skipped):
            return NoCapableTarget(
                f"The prompt is too long for every model of {plan.route!r} ({detail}).",
                "context_length_exceeded",
                "messages",
            )
        if skipped and all(a.reason == "excluded" for a in skipped):
            return NoCapableTarget(
                f"x-turnout-exclude leaves no model of {plan.route!r} to try.", "all_excluded"
            )
        return NoCapableTarget(
            f"No model of {plan.route!r} can serve this request ({detail}).",
            "capability_missing",
        )

    # --- ordering ------------------------------------------------------------------------------

    def _policy_order(
        self,
        policy: str,
        weights: dict[str, float],
        targets: list[Target],
        request: Request,
        prompt: int | None,
    ) -> list[Target]:
        if policy == "weighted":
            return policies.weighted(targets, weights, self.rng)
        if policy in ("cheapest", "fastest"):
            tokens = prompt if prompt is not None else estimate_prompt_tokens(request)
            if policy == "cheapest":
                return policies.cheapest(targets, tokens, request.max_tokens or 256)
            return policies.fastest(targets, self.health, tokens)
        return targets

    def _sticky(
        self, route: str, prefer: list[str], targets: list[Target], request: Request
    ) -> list[Target]:
        key = request.session or request.user
        sessions = self.sessions[route]
        now = time.time()

        def available(target: Target) -> bool:
            return self.health.available_at(target.name, now) <= now

        first = next((t for t in targets if t.name in prefer and available(t)), None)
        if first is None and key:
            current = sessions.get(route, key)
            first = next((t for t in targets if t.name == current and available(t)), None)
        if first is None:
            return targets
        return [first, *(t for t in targets if t is not first)]
