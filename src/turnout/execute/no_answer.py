"""What the attempt loop reports to its callers when no answer comes: every target failed, or
the client's own request was refused. (Each skipped or failed target is a model.Attempt.)"""

from __future__ import annotations

from turnout.model import Attempt, UpstreamError
from turnout.routing import Plan, Target


class AllTargetsFailed(Exception):
    """No target of the plan could answer. `retry_after`: when one is expected back."""

    def __init__(
        self,
        plan: Plan,
        attempts: list[Attempt],
        errors: list[UpstreamError],
        retry_after: float | None = None,
        tries: int | None = None,
    ) -> None:
        self.plan = plan
        self.tries = len(errors) if tries is None else tries  # upstream attempts made
        self.attempts = attempts
        self.errors = errors
        self.retry_after = retry_after
        detail = "; ".join(f"{a.model}: {a.reason}" for a in attempts) or "no targets"
        super().__init__(f"no target of {plan.route!r} could answer ({detail})")


class PassThroughError(Exception):
    """The client's own request was refused upstream: returned to the client as it is."""

    def __init__(
        self, error: UpstreamError, attempts: list[Attempt], target: Target, tries: int
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempts = attempts
        self.target = target
        self.tries = tries
