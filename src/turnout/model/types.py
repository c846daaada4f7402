"""Request, Response, Delta, Usage and Outcome: one shape each, whatever the wire format.

The chat messages and tools inside a Request keep the OpenAI Chat Completions shape: it is
the lingua franca every provider dialect already maps to and from, so the OpenAI dialect
costs nothing and every other dialect is one translation away.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from turnout.model.errors import ErrorClass


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0  # includes cached tokens, as OpenAI counts them
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None  # what the provider itself reported (OpenRouter usage.cost)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model produced it


@dataclass(slots=True)
class ToolCallDelta:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class Request:
    """One chat request, decoded from whatever dialect the client spoke."""

    model: str  # what the client asked for: a route name or a model name
    messages: list[dict[str, Any]]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    # parameters turnout does not interpret, passed through to OpenAI-compatible upstreams
    extra: dict[str, Any] = field(default_factory=dict)
    # from HTTP headers: the workflow session (x-turnout-session), models to skip
    session: str | None = None
    exclude: frozenset[str] = frozenset()
    policy: str | None = None  # x-turnout-route-policy, from an admin key only
    # the gateway's id of the client request this is (the ledger row's): attempts carry it
    request_id: str | None = None
    # the prompt's tokens, when routing had to count them (a context window was close)
    prompt_tokens: int | None = None
    # the wire format the client speaks, set by the core when nothing but the client needs the
    # decoded answer (no output guard, capture or stale copy): an upstream speaking the same
    # format may then hand back its own answer, decoding only the usage (a pass-through)
    answer_format: str | None = None

    @property
    def wants_json(self) -> bool:
        fmt = self.response_format
        return fmt is not None and fmt.get("type") in ("json_object", "json_schema")

    @property
    def json_schema(self) -> dict[str, Any] | None:
        """The schema the answer must match, when the client gave one."""
        fmt = self.response_format or {}
        spec = fmt.get("json_schema") if fmt.get("type") == "json_schema" else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else None


@dataclass(slots=True)
class Response:
    id: str
    model: str
    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    reasoning: str | None = None
    created: int = 0
    # the upstream's own answer object when it is already in the client's wire format (a
    # pass-through, see Request.answer_format): the client's encoder sends it back as it is,
    # with only the model name and the usage (cost included) set; the fields above then hold
    # what the core reads (usage, finish reason) and the id and created time; no content
    # Anthropic's thinking blocks as sent (thinking with its signature, redacted_thinking):
    # an Anthropic client needs them back whole to continue a tool-use turn with thinking
    thinking: list[dict[str, Any]] | None = None
    raw: dict[str, Any] | None = None


@dataclass(slots=True)
class Delta:
    """One streamed increment of an answer."""

    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    role: str | None = None
    # Anthropic's thinking block ends: its signature, or a whole redacted_thinking block's
    # data. A client continuing a tool-use turn with thinking must send them back unchanged.
    signature: str | None = None
    redacted: str | None = None

    @property
    def has_content(self) -> bool:
        """True once the model has produced something the client can see."""
        return bool(self.content or self.reasoning or self.tool_calls)


@dataclass(slots=True)
class Attempt:
    """A target that did not answer a request, and why (skipped or failed): what routing's
    filters and the attempt loop both report, and the x-turnout-fallback header shows."""

    model: str
    reason: str


@dataclass(slots=True)
class Outcome:
    """What happened on one attempt at one model: the fact health and accounting derive from."""

    route: str
    model: str
    provider: str
    ok: bool
    error_class: ErrorClass | None = None
    status: int | None = None
    message: str | None = None
    started: float = 0.0  # turnout.clock, seconds since the epoch
    ttft: float | None = None  # seconds to the first content token (real time)
    latency: float = 0.0  # seconds, whole attempt (real time)
    usage: Usage | None = None
    headers: Mapping[str, str] | None = None  # upstream response headers (rate limits)
    retry_after: float | None = None  # seconds, when the upstream said when to come back
    probe: bool = False  # a synthetic health probe, not a client's request
    # which deployment of `model` was tried, for a model with several (health is per deployment)
    deployment: str | None = None
    request_id: str | None = None  # the client request it was tried for (None: a probe)
    # turnout.clock epoch seconds when the headers arrived and when the attempt ended (0: not
    # known, an outcome built by hand): what learns from an outcome reads these, never
    # `started + latency`, which adds a real duration to a simulated time under a scenario
    headers_at: float = 0.0
    ended: float = 0.0
