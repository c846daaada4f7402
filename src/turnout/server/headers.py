"""The x-turnout-* response headers: which route, which model answered, what failed first."""

from __future__ import annotations

from turnout.execute import Attempt


def turnout_headers(
    route: str, model: str | None, tries: int, attempts: list[Attempt]
) -> dict[str, str]:
    headers = {"x-turnout-route": route, "x-turnout-attempts": str(tries)}
    if model is not None:
        headers["x-turnout-model"] = model
    if attempts:
        headers["x-turnout-fallback"] = ", ".join(f"{a.model}={a.reason}" for a in attempts)
    return headers
