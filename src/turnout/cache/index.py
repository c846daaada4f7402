"""How a request finds the key of its stored answer: the seam between cache modes.

`exact` (here): the key is the hash of everything that decides the answer, so finding is
computing. `semantic` (to come) plugs in as another Index: it would embed the prompt, search
the route's vectors for the nearest earlier prompt above the threshold and return that
prompt's key with its similarity, and `added` would index a stored answer's vector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from turnout.cache.key import request_key, route_tag
from turnout.model import Request
from turnout.routing import Plan


@dataclass(slots=True, frozen=True)
class Found:
    key: str  # `{route tag}:{digest}`: where the answer is (or would be) stored
    similarity: float | None = None  # semantic matches only; None for an exact key


class Index(Protocol):
    async def find(self, plan: Plan, request: Request, scope: str, dialect: str) -> Found:
        """Where this request's answer is, or would be stored."""
        ...

    async def added(self, found: Found, plan: Plan, request: Request, scope: str) -> None:
        """An answer was stored under `found.key` (an exact index has nothing to add)."""
        ...


class ExactIndex:
    async def find(self, plan: Plan, request: Request, scope: str, dialect: str) -> Found:
        return Found(f"{route_tag(plan.route)}:{request_key(plan, request, scope, dialect)}")

    async def added(self, found: Found, plan: Plan, request: Request, scope: str) -> None:
        return None


INDEXES: dict[str, Index] = {"exact": ExactIndex()}  # mode -> index
