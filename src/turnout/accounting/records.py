"""The records accounting stores: one ledger row per client request, one per gateway key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Bounds on the client-controlled text a row keeps (a model name or session id can be
# megabytes): enough to recognise it, never enough to bloat the ledger or the queue.
NAME_LIMIT = 256  # route, model, provider, session, key id, attempt model
ERROR_LIMIT = 300  # error text, attempt reasons
_CUT = "…[+{} chars]"


def safe_text(value: str, limit: int) -> str:
    """`value` as text every database takes: valid UTF-8 (undecodable bytes and lone
    surrogates become U+FFFD), no NULs (PostgreSQL refuses them), at most `limit`
    characters (a longer value is cut, with a marker saying how much was cut)."""
    if value.isascii() and len(value) <= limit and "\x00" not in value:
        return value  # the usual case, on every request's path
    if not value.isascii():
        # aiohttp decodes header bytes with surrogateescape: get the bytes back, then decode
        # them leniently; any other lone surrogate is replaced
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "replace")
        value = raw.decode("utf-8", "replace")
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if len(value) > limit:
        marker = _CUT.format(len(value) - limit)
        value = value[: limit - len(marker)] + marker
    return value


@dataclass(slots=True)
class LedgerRow:
    """One client request, whatever happened to it: exactly one row each."""

    id: str  # uuid4 hex, also returned to the client as x-turnout-request-id
    started_at: float  # epoch seconds
    route: str  # what the client asked for (route or forced model); "" if it never said
    dialect: str  # openai | anthropic
    stream: bool
    status: int  # the HTTP status the client got (200 even if a stream later failed)
    outcome: str  # ok | error | client_closed | stream_failed | stale | shutdown
    model: str | None = None  # the model that answered
    provider: str | None = None  # its provider
    attempts: list[dict[str, Any]] = field(default_factory=list)  # [{model, reason}] before it
    prompt_tokens: int = 0  # including cached
    cached_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False  # the stream ended early: tokens counted by us, not upstream
    cost_usd: float = 0.0  # computed from the price table / config
    provider_cost_usd: float | None = None  # what the provider itself reported (OpenRouter)
    baseline_cost_usd: float = 0.0  # the same tokens on the route's baseline model
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    key_id: str | None = None
    session: str | None = None
    error: str | None = None  # short reason for non-ok outcomes
    # JSON asked for (response format or route output_schema): ok | invalid_json |
    # schema_mismatch; None when the answer was not checked. A whole answer that failed the
    # check never reached the client; a streamed one was flagged after it was sent
    output_check: str | None = None
    # the response cache, on routes that have one: hit | similar | miss | bypass (None: no
    # cache). A hit cost nothing upstream (cost_usd 0, no tokens); cache_saved_usd is what its
    # answer cost when it was first made, and is counted apart from routing's savings
    # (baseline). `similar`: a semantic hit, with its prompt's similarity to the earlier one
    cache: str | None = None
    cache_saved_usd: float = 0.0
    cache_similarity: float | None = None

    @property
    def saved_usd(self) -> float:
        return self.baseline_cost_usd - self.cost_usd

    def bound_text(self) -> None:
        """Make the text fields that come from outside safe to store and bounded (see
        safe_text): client input reaches route, session and error, upstream input the error
        and the attempts' reasons. The others (model, provider, key id, dialect, outcome)
        are the gateway's own names, from its config and code."""
        self.route = safe_text(self.route, NAME_LIMIT)
        if self.session is not None:
            self.session = safe_text(self.session, NAME_LIMIT)
        if self.error is not None:
            self.error = safe_text(self.error, ERROR_LIMIT)
        if not self.attempts:
            return
        self.attempts = [
            {
                str(name): safe_text(str(value), ERROR_LIMIT) if isinstance(value, str) else value
                for name, value in attempt.items()
            }
            for attempt in self.attempts
        ]


@dataclass(slots=True)
class KeyRecord:
    """A gateway API key. Only its hash is stored; the key itself is shown once."""

    id: str  # public id, e.g. "key_3f9a..." (safe to log)
    name: str
    key_hash: str  # sha256 hex of the full key (keys are 256-bit random: a fast hash is right)
    prefix: str  # the first characters of the key, to recognise it in lists
    created_at: float
    revoked_at: float | None = None
    routes: list[str] | None = None  # None: every route
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute
    daily_budget_usd: float | None = None
    monthly_budget_usd: float | None = None
    on_exceed: str = "block"  # block | downgrade
    admin: bool = False
