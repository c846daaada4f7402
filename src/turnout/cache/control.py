"""The client's say, from its `cache-control` request header (RFC 9111's request
directives, the two a response cache acts on): `no-cache` skips the stored answer (the
fresh one is still stored), `no-store` stores nothing of this exchange."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Directives:
    no_cache: bool = False
    no_store: bool = False


NONE = Directives()


def directives(header: str | None) -> Directives:
    if not header:
        return NONE
    tokens = {part.split("=", 1)[0].strip().lower() for part in header.split(",")}
    # `max-age=0` asks for a response no older than zero seconds: a fresh one, as no-cache
    max_age_zero = any(p.strip().lower().replace(" ", "") == "max-age=0" for p in header.split(","))
    return Directives(no_cache="no-cache" in tokens or max_age_zero, no_store="no-store" in tokens)
