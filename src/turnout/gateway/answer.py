"""What the core gives the server for a request it answers: a whole response or a committed
stream to relay, and how it was reached (the route, the model, what failed first, the cost).
The server encodes it and writes `headers()`; it never calls back into the core."""

from __future__ import annotations

from dataclasses import dataclass, field

from turnout.execute import Relay
from turnout.execute.hedge import HedgeAttempt
from turnout.model import Attempt, Response


def turnout_headers(
    route: str,
    model: str | None,
    tries: int,
    attempts: list[Attempt],
    stale_age: float | None = None,
) -> dict[str, str]:
    """The x-turnout-* headers: which route, which model answered, what failed first."""
    headers = {"x-turnout-route": route, "x-turnout-attempts": str(tries)}
    if stale_age is not None:
        # a stored answer served because no target could answer (stale_if_error)
        headers["x-turnout-stale"] = "true"
        headers["age"] = str(int(stale_age))
    if model is not None:
        headers["x-turnout-model"] = model
    if attempts:
        headers["x-turnout-fallback"] = ", ".join(f"{a.model}={a.reason}" for a in attempts)
        hedged = next((a for a in attempts if isinstance(a, HedgeAttempt)), None)
        if hedged is not None:
            # `first>hedge; winner=model` (winner=none when neither answered)
            headers["x-turnout-hedged"] = (
                f"{hedged.primary}>{hedged.hedge}; winner={model or 'none'}"
            )
    return headers


@dataclass(slots=True)
class Answer:
    request_id: str
    route: str
    model: str  # the target that answered
    tries: int  # upstream attempts made
    attempts: list[Attempt]  # the targets skipped or failed before it, and why
    response: Response | None = None  # a whole answer...
    relay: Relay | None = None  # ...or a committed stream, relayed by the server's client end
    stale_age: float | None = None  # a stored answer (stale_if_error), this old
    validated: bool = False  # the output guard checked it
    ttft_ms: float | None = None  # a stream's: from the request's arrival to its first token
    cost_usd: float | None = None  # a whole answer's (a stream's is known at its end)
    saved_usd: float | None = None  # against the route's baseline, when it has one
    config: str = ""  # the version of the config that served it (they change on a reload)
    extra_headers: dict[str, str] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        headers = turnout_headers(self.route, self.model, self.tries, self.attempts, self.stale_age)
        headers["x-turnout-request-id"] = self.request_id
        headers["x-turnout-config"] = self.config
        if self.cost_usd is not None:
            headers["x-turnout-cost-usd"] = f"{self.cost_usd:.8f}"
        if self.saved_usd is not None:
            headers["x-turnout-saved-usd"] = f"{self.saved_usd:.8f}"
        if self.validated:
            headers["x-turnout-guard"] = "valid"
        headers.update(self.extra_headers)
        return headers
