"""Before any attempt: the route exists, the key may use it, its rate limits and budgets
allow it (or downgrade it to cheaper targets), and only an admin overrides a route's policy.
Each refusal is a `Refused` the server renders in the client's dialect."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from turnout import clock
from turnout.accounting.auth import Authenticator, Identity
from turnout.accounting.budgets import Verdict
from turnout.accounting.service import Accounting
from turnout.gateway.runtime import Runtime
from turnout.health.pacing import Pacer
from turnout.model import Attempt, Request
from turnout.model.errors import GatewayError
from turnout.model.tokens import estimate_prompt_tokens
from turnout.routing import Plan, Target
from turnout.routing.policies import POLICIES

_ECHO_LIMIT = 100  # characters of a client's model name quoted back in an error
_MAX_PACING_WAIT = 2.0  # seconds a request may wait for a paced model when all are paced
_TYPICAL_OUTPUT = 1024  # tokens a request without max_tokens is expected to write, at first


class Refused(GatewayError):
    """The core's own refusals (unknown route, rate limit, budget, all targets failed); the
    layers below raise theirs (AuthError, BodyError, InvalidRequest, NoCapableTarget), and
    all are answered alike, by the server's `render_error`."""


def quote(name: str) -> str:
    """A client's name as an error quotes it: the start of it only (it may be megabytes)."""
    if len(name) <= _ECHO_LIMIT:
        return repr(name)
    return f"{name[:_ECHO_LIMIT]!r}… ({len(name)} characters)"


def plan_for(runtime: Runtime, request: Request) -> Plan:
    plan = runtime.plan(request.model)
    if plan is None:
        known = ", ".join(runtime.route_names) or "none"
        raise Refused(
            404,
            f"The model {quote(request.model)} is not a route or model of this gateway"
            f" (routes: {known}).",
            code="model_not_found",
            param="model",
        )
    return plan


def _check_override(policy: str, identity: Identity) -> None:
    if not identity.admin:
        raise Refused(
            403,
            "x-turnout-route-policy is accepted only from admin keys: the route's"
            " policy is set in the gateway's config.",
            error_type="permission_error",
            param="x-turnout-route-policy",
        )
    if policy not in POLICIES:
        raise Refused(
            400,
            f"x-turnout-route-policy must be one of {', '.join(POLICIES)}.",
            param="x-turnout-route-policy",
        )


def admit(
    runtime: Runtime, accounting: Accounting, identity: Identity, plan: Plan, request: Request
) -> None:
    """The key's route rights, policy override, rate limits, then budgets (block, or
    downgrade to cheaper targets by excluding the dearer ones), counted in this process
    (when nothing is counted by the fleet: `admit_request` is the shared one)."""
    _check_rights(identity, plan, request)
    now = clock.now()
    wait = accounting.limiter.admit(identity.key, now) if identity.key is not None else None
    if wait is not None:
        raise _rate_limited(identity, wait)
    _apply(plan, request, accounting.spend.check(identity.key, plan.route, runtime.budgets, now))


async def admit_request(
    runtime: Runtime,
    accounting: Accounting,
    identity: Identity,
    plan: Plan,
    request: Request,
    request_id: str,
    estimate: Callable[[], float] | None = None,
) -> None:
    """`admit`, with the key's limits and the budgets counted once for every process that
    shares the state backend (one Redis round trip, only when a limit or budget applies),
    and the request's expected cost reserved until it ends (`estimate`, by default
    `expected_cost`: embeddings give their own)."""
    _check_rights(identity, plan, request)
    if estimate is None:
        typical = accounting.typical_output.get(plan.route)
        estimate = lambda: expected_cost(plan, request, typical)
    wait, verdict = await accounting.admit(
        request_id, identity.key, plan.route, runtime.budgets, estimate, clock.now()
    )
    if wait is not None:
        raise _rate_limited(identity, wait)
    _apply(plan, request, verdict)


def expected_cost(plan: Plan, request: Request, typical_output: int | None) -> float:
    """What the request may cost at most, as far as is known before it runs: its prompt
    (estimated) plus its max_tokens (else the most the route's answers have written, else
    _TYPICAL_OUTPUT) at the dearest price among the route's targets."""
    prompt = request.prompt_tokens or estimate_prompt_tokens(request)
    output = request.max_tokens or typical_output or _TYPICAL_OUTPUT
    dearest_input = max(t.price.input for t in plan.targets)
    dearest_output = max(t.price.output for t in plan.targets)
    return (prompt * dearest_input + output * dearest_output) / 1_000_000


async def pace(pacer: Pacer, plan: Plan, skipped: list[Attempt]) -> Plan:
    """The plan without the models whose rate-limit headroom (shared by the fleet) has no
    room for this request now: each such model is reported as skipped, and the request goes
    to the first model that takes it. When none does, the soonest slot is waited for if it
    is near (the request is spread over the window), else the plan is left as it was."""
    if not pacer.paced:
        return plan  # no model has told of a rate limit (callers check first: no coroutine)
    for pass_ in range(2):
        waits: list[tuple[Target, float]] = []
        for target in plan.targets:
            wait = await pacer.take(target.key)  # (a deployment has its own limits)
            if wait is None:
                break
            waits.append((target, wait))
        else:
            soonest = min(wait for _, wait in waits)
            if pass_ or soonest > _MAX_PACING_WAIT:
                return plan
            await asyncio.sleep(soonest / clock.speed)  # a slot of the window: clock time
            continue
        if not waits:
            return plan
        skipped += [Attempt(t.key, f"rate_limited(paced {w:.1f}s)") for t, w in waits]
        out = {t.key for t, _ in waits}
        return dataclasses.replace(plan, targets=tuple(t for t in plan.targets if t.key not in out))
    return plan


def _check_rights(identity: Identity, plan: Plan, request: Request) -> None:
    Authenticator.authorize(identity, plan.route)  # or AuthError (a 403)
    if request.policy is not None:
        _check_override(request.policy, identity)


def _rate_limited(identity: Identity, wait: float) -> Refused:
    key = identity.key
    assert key is not None
    return Refused(
        429,
        f"Rate limit of key {key.id} reached (rpm {key.rpm}, tpm {key.tpm}); retry in {wait:.0f}s.",
        code="key_rate_limited",
        error_type="rate_limit_error",
        headers={"retry-after": str(max(1, round(wait)))},
    )


def _apply(plan: Plan, request: Request, verdict: Verdict) -> None:
    if verdict.blocked is not None:
        raise Refused(
            429,
            f"The {verdict.blocked.label} is spent.",
            code="budget_exceeded",
            error_type="rate_limit_error",
        )
    if verdict.providers_over or verdict.downgrade:
        _exclude_over_budget(plan, request, verdict)


def _exclude_over_budget(plan: Plan, request: Request, verdict: Verdict) -> None:
    over = {t.name for t in plan.targets if t.provider.name in verdict.providers_over}
    if verdict.downgrade:
        cheapest = min(t.price.output + t.price.input for t in plan.targets)
        over |= {t.name for t in plan.targets if t.price.output + t.price.input > cheapest}
    if over:
        request.exclude = request.exclude | over
