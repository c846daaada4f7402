"""Per request: which of a plan's targets can serve it, and in what order.

Capability filter (tools, JSON, vision, context window), the client's exclusions, then the
route's policy and session stickiness. Filtered targets are reported as skipped with their
reason; a request no target can serve is the client's problem (400), not an outage (503)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from turnout.health import HealthEngine
from turnout.model import Attempt, Request
from turnout.model.errors import GatewayError
from turnout.routing.capabilities import Needs
from turnout.routing.deployments import expand, heads
from turnout.routing.pending_count import PendingCount
from turnout.routing.planner import Plan
from turnout.routing.prompt_size import SPECULATE_BYTES, PromptSize
from turnout.routing.targets import Target


class NoCapableTarget(GatewayError):
    """No target of the plan can serve this request at all: the client's 400."""

    def __init__(self, message: str, code: str, param: str | None = None) -> None:
        super().__init__(400, message, code=code, param=param)


@dataclass(slots=True)
class Selection:
    plan: Plan  # with its targets in the order to try them
    skipped: list[Attempt]
    # a long prompt's count, still running: the first attempt does not wait for it
    # (routing/pending_count.py; the scheduler acts on it)
    pending: PendingCount | None = None


class Selector:
    """Reads only the plan (built once from the config) and health: never the config."""

    def __init__(self, health: HealthEngine) -> None:
        self.health = health

    async def select(self, plan: Plan, request: Request) -> Selection:
        targets, skipped = self._filtered(plan, request)
        prompt: int | None = None
        pending: PendingCount | None = None
        if plan.context_windows:  # (no coroutine for the usual plan without windows)
            prompt, pending = await self._check_context(plan, targets, request, skipped)
        return self._ordered(plan, request, targets, skipped, prompt, pending)

    def select_now(self, plan: Plan, request: Request) -> Selection:
        """`select` for a plan without context windows (nothing to count, nothing to wait
        for), without a coroutine: the usual request."""
        assert not plan.context_windows, "a plan with context windows is select()ed"
        targets, skipped = self._filtered(plan, request)
        return self._ordered(plan, request, targets, skipped, None, None)

    def _filtered(self, plan: Plan, request: Request) -> tuple[list[Target], list[Attempt]]:
        """The targets that can serve this request (before the context windows), and those
        left out with why."""
        if plan.output_schema is not None and request.response_format is None:
            # the route wants schema-valid JSON: ask every model for it, then check it
            request.response_format = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": plan.output_schema, "strict": True},
            }
        skipped: list[Attempt] = []
        # a model with several deployments is one model until its deployments are ordered
        targets = heads(plan.targets) if plan.groups else list(plan.targets)
        if request.exclude:
            kept = [t for t in targets if t.name not in request.exclude]
            skipped += [Attempt(t.name, "excluded") for t in targets if t not in kept]
            targets = kept
        needs = Needs.of(request)
        if needs is not None:
            targets = self._capable(targets, needs, skipped)
        if plan.strict_max_tokens and request.max_tokens:
            self._check_output(targets, request.max_tokens, skipped)
        return targets, skipped

    def _ordered(
        self,
        plan: Plan,
        request: Request,
        targets: list[Target],
        skipped: list[Attempt],
        prompt: int | None,
        pending: PendingCount | None,
    ) -> Selection:
        """The selection: what is left after the skipped, in the order policy and session
        stickiness give."""
        if skipped:
            targets = [t for t in targets if t.name not in {a.model for a in skipped}]
        if not targets:
            raise nothing_can(plan, skipped)
        if not plan.forced:
            # an admin key may override the route's policy (the header's name is checked)
            policy = plan.policies.get(request.policy or "", plan.policy)
            targets = policy.order(targets, request, self.health, prompt)
            if plan.consistency is not None:
                targets = plan.consistency.order(targets, request, self.health)
        if plan.groups:
            targets = expand(targets, plan.groups, self.health)
        if tuple(targets) == plan.targets:
            return Selection(plan, skipped, pending)  # the common case: nothing to rebuild
        return Selection(dataclasses.replace(plan, targets=tuple(targets)), skipped, pending)

    @staticmethod
    def remember(plan: Plan, request: Request, model: str) -> None:
        """The session's model is the one that just answered: a failover moves it whole."""
        if plan.consistency is not None:
            plan.consistency.remember(request, model)

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
    ) -> tuple[int | None, PendingCount | None]:
        """Skip targets whose context window cannot hold prompt + max_tokens. Returns the
        prompt's token count when it is known (counted, or every text cached), or the count
        still running (speculation, below).

        Counts only when the bounds (routing/prompt_size.py) leave a target undecided: a
        target is kept uncounted when even the upper bound fits with the whole max_tokens
        (so its output limit needs no clamping), skipped uncounted when even the lower bound
        does not fit. A long count (SPECULATE_BYTES uncounted) is not waited for: it is
        started and handed over, undecided targets kept, and the scheduler acts on it
        while the first attempt runs (execute/speculate.py). A hedged route counts first: a
        hedge could otherwise go to a target the count has not vetted."""
        windows = [t.model.context_window for t in targets if t.model.context_window]
        if not windows:
            return None, None
        output = request.max_tokens or 0
        size = PromptSize.of(request)
        if size.upper + output <= min(windows):
            return None, None  # fits everywhere, proven without counting (the usual request)
        # a route that clamps max_tokens skips only the windows the prompt alone fills
        room = output if plan.strict_max_tokens else 1
        size.refine(deciding=min(windows) - room)
        pending = None
        if any(
            size.upper + output > window >= size.lower + room for window in windows
        ):  # some target undecided by the bounds: count (cached texts are not recounted)
            if plan.hedge is None and size.uncounted_bytes() >= SPECULATE_BYTES:
                pending = PendingCount.start(size, request, output, room)
            else:
                await size.count()
        if size.exact is not None:
            request.prompt_tokens = size.exact  # a target's output limit is clamped to it
        for target in targets:
            window = target.model.context_window
            if window and size.lower + room > window:
                tokens = size.exact if size.exact is not None else f"at least {size.lower}"
                skipped.append(Attempt(target.name, f"context_length({tokens}+{output}>{window})"))
        return size.exact, pending

    @staticmethod
    def _check_output(targets: list[Target], asked: int, skipped: list[Attempt]) -> None:
        """A strict route: targets that cannot write `asked` tokens are skipped."""
        for target in targets:
            limit = target.max_output
            if limit is not None and asked > limit:
                skipped.append(Attempt(target.name, f"max_tokens({asked}>{limit})"))


def nothing_can(plan: Plan, skipped: list[Attempt]) -> NoCapableTarget:
    """The client's 400 when `skipped` leaves no target of `plan` (also the scheduler's, when
    a count that was still running rules out every target left: execute/speculate.py)."""
    detail = "; ".join(f"{a.model}: {a.reason}" for a in skipped)
    reasons = [a.reason.partition("(")[0] for a in skipped]
    if "max_tokens" in reasons and set(reasons) <= {"max_tokens", "context_length"}:
        return NoCapableTarget(
            f"max_tokens is more than any model of {plan.route!r} can write ({detail});"
            " the route is strict about it.",
            "max_tokens_too_large",
            "max_tokens",
        )
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
