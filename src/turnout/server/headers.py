"""The x-turnout-* response headers: which route, which model answered, what failed first."""

from __future__ import annotations

from turnout.model import Attempt


def turnout_headers(
    route: str,
    model: str | None,
    tries: int,
    attempts: list[Attempt],
    stale_age: float | None = None,
) -> dict[str, str]:
    headers = {"x-turnout-route": route, "x-turnout-attempts": str(tries)}
    if stale_age is not None:
        # a stored answer served because no target could answer (stale_if_error)
        headers["x-turnout-stale"] = "true"
        headers["age"] = str(int(stale_age))
    if model is not None:
        headers["x-turnout-model"] = model
    if attempts:
        headers["x-turnout-fallback"] = ", ".join(f"{a.model}={a.reason}" for a in attempts)
    return headers
