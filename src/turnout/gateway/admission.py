"""Before any attempt: the route exists, the key may use it, its rate limits and budgets
allow it (or downgrade it to cheaper targets), and only an admin overrides a route's policy.
Each refusal is a `Refused` the server renders in the client's dialect."""

from __future__ import annotations

import time

from turnout.accounting.auth import Authenticator, Identity
from turnout.accounting.budgets import Verdict
from turnout.accounting.service import Accounting
from turnout.gateway.runtime import Runtime
from turnout.model import Request
from turnout.model.errors import GatewayError
from turnout.routing import Plan
from turnout.routing.policies import POLICIES

_ECHO_LIMIT = 100  # characters of a client's model name quoted back in an error


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
    downgrade to cheaper targets by excluding the dearer ones)."""
    Authenticator.authorize(identity, plan.route)  # or AuthError (a 403)
    if request.policy is not None:
        _check_override(request.policy, identity)
    now = time.time()
    if identity.key is not None:
        wait = accounting.limiter.admit(identity.key, now)
        if wait is not None:
            raise Refused(
                429,
                f"Rate limit of key {identity.key.id} reached (rpm {identity.key.rpm},"
                f" tpm {identity.key.tpm}); retry in {wait:.0f}s.",
                code="key_rate_limited",
                error_type="rate_limit_error",
                headers={"retry-after": str(max(1, round(wait)))},
            )
    verdict = accounting.spend.check(identity.key, plan.route, runtime.budgets, now)
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
