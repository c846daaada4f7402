"""What the core needs for an embeddings request that chat does not: finding an embeddings
route (with refusals that say how to get one), admission through chat's own (counted by the
fleet as chat's is), and the route's order of targets (the client's exclusions, the policy,
session stickiness).

The flow itself is `Gateway.embed` (gateway/core.py), beside `Gateway.handle`, so that both
read alike; the attempts are execute/embed.py's."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from turnout.accounting.auth import Identity
from turnout.accounting.service import Accounting
from turnout.execute.embed import Embedded
from turnout.gateway.admission import Refused, admit, admit_request, quote
from turnout.gateway.answer import Answer
from turnout.gateway.runtime import Runtime
from turnout.health import HealthEngine
from turnout.model import Attempt, Request
from turnout.model.embeddings import EmbeddingRequest
from turnout.routing import Plan
from turnout.routing.capabilities import serves_embeddings
from turnout.routing.selector import NoCapableTarget

HOW_TO_CONFIGURE = (
    "Configure one: a model with `supports: [embeddings]` on an OpenAI-compatible provider"
    " (kind openai), and a route listing it (README, Embeddings)."
)


@dataclass(slots=True)
class EmbeddingAnswer:
    """The vectors and how they were reached; `answer` carries the x-turnout-* headers."""

    answer: Answer
    embedded: Embedded


def embeddings_routes(runtime: Runtime) -> list[str]:
    return [n for n in runtime.route_names if serves_embeddings(runtime.planner.plans[n])]


def embeddings_plan(runtime: Runtime, request: EmbeddingRequest) -> Plan:
    """The route or model the client named, if it serves embeddings; else a 404 saying which
    routes do, or that a chat route was named."""
    plan = runtime.plan(request.model)
    routes = ", ".join(embeddings_routes(runtime)) or "none"
    if plan is None:
        raise Refused(
            404,
            f"The model {quote(request.model)} is not an embeddings route or model of this"
            f" gateway (embeddings routes: {routes}). {HOW_TO_CONFIGURE}",
            code="model_not_found",
            param="model",
        )
    if not serves_embeddings(plan):
        raise Refused(
            404,
            f"{quote(request.model)} is a chat route or model: it does not serve embeddings"
            f" (embeddings routes: {routes}).",
            code="model_not_embeddings",
            param="model",
        )
    return plan


def refuse_chat(plan: Plan) -> Refused:
    """A chat request sent to an embeddings route or model."""
    return Refused(
        404,
        f"{plan.route!r} is an embeddings route or model: send its requests to"
        " POST /v1/embeddings, and chat to a chat route.",
        code="model_not_chat",
        param="model",
    )


def as_request(request: EmbeddingRequest) -> Request:
    """The embeddings request as the chat Request that admission, policies and session
    stickiness read: they use only its model, session, user, policy override and exclusions,
    so they are reused unchanged rather than taught a second request type."""
    return Request(
        model=request.model,
        messages=[],
        user=request.user,
        session=request.session,
        exclude=request.exclude,
        policy=request.policy,
    )


async def admit_embeddings(
    runtime: Runtime,
    accounting: Accounting,
    identity: Identity,
    plan: Plan,
    request: EmbeddingRequest,
    request_id: str,
    tokens: int,
) -> None:
    """Chat's admission, unchanged: the key's route rights, rate limits and budgets (which
    may exclude the targets over budget), counted once by the fleet when the state backend
    is shared (as chat's are), else in this process. `tokens`: the inputs' estimated size,
    whose cost at the dearest target is reserved against the budgets until the end."""
    seen = as_request(request)
    if accounting.counts_shared(identity.key, plan.route, runtime.budgets):
        estimate = lambda: expected_embedding_cost(plan, tokens)
        await admit_request(runtime, accounting, identity, plan, seen, request_id, estimate)
    else:  # this process counts (no Redis, or no limit or budget applies): no round trip
        admit(runtime, accounting, identity, plan, seen)
    request.exclude = seen.exclude


def expected_embedding_cost(plan: Plan, tokens: int) -> float:
    """The inputs at the dearest input price among the route's targets (no output)."""
    return tokens * max(t.price.input for t in plan.targets) / 1_000_000


def order(
    plan: Plan, request: EmbeddingRequest, health: HealthEngine, tokens: int
) -> tuple[Plan, list[Attempt]]:
    """The targets to try, in order, and those excluded: the client's (or the budget's)
    exclusions, then the route's policy (or an admin's override) and session stickiness."""
    targets = [t for t in plan.targets if t.name not in request.exclude]
    skipped = [Attempt(t.name, "excluded") for t in plan.targets if t.name in request.exclude]
    if not targets:
        raise NoCapableTarget(
            f"x-turnout-exclude leaves no model of {plan.route!r} to try.", "all_excluded"
        )
    if not plan.forced:
        seen = as_request(request)  # (`tokens`: the inputs' size, for cheapest and fastest)
        policy = plan.policies.get(request.policy or "", plan.policy)
        targets = policy.order(targets, seen, health, tokens)
        if plan.consistency is not None:
            targets = plan.consistency.order(targets, seen, health)
    if tuple(targets) == plan.targets:
        return plan, skipped
    return dataclasses.replace(plan, targets=tuple(targets)), skipped


def remember(plan: Plan, request: EmbeddingRequest, model: str) -> None:
    """The session's model is the one that just answered (as for chat)."""
    if plan.consistency is not None:
        plan.consistency.remember(as_request(request), model)
