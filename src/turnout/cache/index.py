"""How a request finds the key of its stored answer: the seam between cache modes.

`exact` (here): the key is the hash of everything that decides the answer, so finding is
computing. `semantic` (cache/semantic.py) is another Index: when the exact key holds nothing,
`nearest` embeds the last user message and searches the vectors of the same conversation
context for the nearest earlier one above the threshold; `added` indexes a stored answer's
vector."""

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
    # semantic: the last user message's vector (packed) and the context it is indexed under
    # once the answer is stored; empty for an exact key
    vector: bytes = b""
    bucket: str = ""


class Index(Protocol):
    async def find(self, plan: Plan, request: Request, scope: str, dialect: str) -> Found:
        """Where this request's answer is, or would be stored."""
        ...

    async def nearest(
        self,
        exact: Found,
        plan: Plan,
        request: Request,
        scope: str,
        dialect: str,
        key_id: str | None,
        search: bool = True,
    ) -> tuple[Found | None, Found]:
        """Asked when the exact key holds nothing: (a similar earlier request's key, or None;
        where this request's answer is stored, with what `added` needs to index it).
        `search` False: only the second (the client said no-cache)."""
        ...

    async def added(self, found: Found, plan: Plan, request: Request, scope: str) -> None:
        """An answer was stored under `found.key` (an exact index has nothing to add)."""
        ...


class ExactIndex:
    async def find(self, plan: Plan, request: Request, scope: str, dialect: str) -> Found:
        return Found(f"{route_tag(plan.route)}:{request_key(plan, request, scope, dialect)}")

    async def nearest(
        self,
        exact: Found,
        plan: Plan,
        request: Request,
        scope: str,
        dialect: str,
        key_id: str | None,
        search: bool = True,
    ) -> tuple[Found | None, Found]:
        return None, exact

    async def added(self, found: Found, plan: Plan, request: Request, scope: str) -> None:
        return None


INDEXES: dict[str, Index] = {"exact": ExactIndex()}  # mode -> index
