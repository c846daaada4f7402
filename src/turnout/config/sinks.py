"""The `sinks:` and `alerts:` config sections: where the gateway's events go out, and the rules
that turn events into alert messages. The sinks themselves live in turnout/sinks/.

Each sink section is validated whole by its kind's model (like a provider section), so a bad
field is one error at its key path (`sinks.1.url: ...`). The client library a kind needs is
imported only when the sink first delivers; here we only check that it is installed, so a
missing library is a config error that names the pip extra, not a traceback at run time.
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    field_validator,
    model_validator,
)

from turnout.config.fields import Duration, Probability, SecretRef, Strict

# The exported event types. Each is produced by one exporter in turnout/sinks/exported.py;
# a later event (the rollout events) adds its name here and its exporter
# there, or a plugin calls register_event_type.
EVENT_TYPES: list[str] = [
    "fallback",  # a request answered by other than its first-choice model, or failed over
    "attempt_failed",  # one failed upstream attempt
    "health_changed",  # a breaker opened/closed, a cooldown, a key rejected/recovered
    "budget_alert",  # a budget crossed its soft share
    "config_reloaded",  # a reload: the new version, or why the old one still serves
    "rollout",  # a canary or shadow rollout moved: started, stage, promoted, rolled back
    "alert",  # an alert rule fired or recovered (alerts:)
]
# Left out by default: `attempt_failed`, one event per failed upstream call (a dead primary
# makes one per request, which `fallback` already tells once per request with every attempt
# and its reason in it); and `alert`, which goes to the sink an alert rule names in `notify`
# (and to sinks that list `alert` themselves), not to every sink.
DEFAULT_EVENTS: tuple[str, ...] = tuple(
    t for t in EVENT_TYPES if t not in ("attempt_failed", "alert")
)

SINKS_EXTRA = "pip install 'turnout[sinks]'"


def register_event_type(name: str, default: bool = True) -> None:
    """A plugin's own exported event type, so that `events:` filters may name it."""
    global DEFAULT_EVENTS
    if name not in EVENT_TYPES:
        EVENT_TYPES.append(name)
        if default:
            DEFAULT_EVENTS = (*DEFAULT_EVENTS, name)


def _needs(module: str, library: str, kind: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"kind {kind} needs the {library} library: {SINKS_EXTRA}")


def _no_inline_password(url: str) -> str:
    try:
        password = urlsplit(url).password
    except ValueError:
        raise ValueError(f"{url!r} is not a URL") from None
    if password:
        raise ValueError("no password in the URL: put it in `password: ${ENV_VAR}`")
    return url


class SinkConfig(Strict):
    """What every sink kind has: its name, which events it takes and how it delivers."""

    kind: str
    name: str = Field(min_length=1)
    # event types to send, or "all"; None: every type but per-attempt noise (DEFAULT_EVENTS)
    events: list[str] | Literal["all"] | None = None
    max_queue: int = Field(10_000, ge=1)  # events waiting; past it new ones drop (counted)
    batch: int = Field(100, ge=1, le=10_000)  # most events per delivery, where the kind batches
    retries: int = Field(3, ge=0, le=20)  # a failed delivery is tried again this many times...
    backoff: Duration = 0.5  # ...after this long, doubling each time...
    max_backoff: Duration = 10.0  # ...up to this; then the batch is dropped (and counted)
    timeout: Duration = 5.0  # one delivery (connect included)

    @field_validator("events")
    @classmethod
    def _known_events(cls, events: list[str] | str | None) -> list[str] | str | None:
        if isinstance(events, list):
            unknown = [e for e in events if e not in EVENT_TYPES]
            if unknown:
                raise ValueError(
                    f"unknown event type {unknown[0]!r} (known: {', '.join(EVENT_TYPES)})"
                )
        return events

    def wanted(self) -> tuple[str, ...]:
        """The event types this sink takes."""
        if self.events is None:
            return DEFAULT_EVENTS
        if self.events == "all":
            return tuple(EVENT_TYPES)
        return tuple(self.events)


class JsonlSinkConfig(SinkConfig):
    """One JSON object per line, appended to a file."""

    kind: Literal["jsonl"] = "jsonl"
    path: str = Field(min_length=1)


class WebhookSinkConfig(SinkConfig):
    """POST each event as a Slack-compatible body: {"text": ..., "event": {...}}."""

    kind: Literal["webhook"] = "webhook"
    # a ${ENV} reference: a webhook URL (Slack's, for one) is itself the credential
    url: SecretRef


class RedisSinkConfig(SinkConfig):
    """XADD to a Redis stream, trimmed to about `maxlen` entries (MAXLEN ~)."""

    kind: Literal["redis"] = "redis"
    url: Annotated[str, BeforeValidator(_no_inline_password)] = "redis://127.0.0.1:6379/0"
    password: SecretRef | None = None
    stream: str = Field("turnout:events", min_length=1)
    maxlen: int = Field(100_000, ge=1)

    @model_validator(mode="after")
    def _library(self) -> RedisSinkConfig:
        _needs("redis", "redis", "redis")
        return self


class NatsSinkConfig(SinkConfig):
    """Publish to NATS JetStream, one subject per event type: `<subject>.<type>`."""

    kind: Literal["nats"] = "nats"
    servers: list[Annotated[str, BeforeValidator(_no_inline_password)]] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1
    )
    user: str | None = None
    password: SecretRef | None = None
    token: SecretRef | None = None
    subject: str = Field("turnout.events", min_length=1)  # prefix: turnout.events.fallback
    # the JetStream stream that stores the subjects; created (subjects `<subject>.>`) when
    # absent if `create_stream`, else the operator creates it
    stream: str = Field("TURNOUT_EVENTS", min_length=1)
    create_stream: bool = True

    @model_validator(mode="after")
    def _library(self) -> NatsSinkConfig:
        _needs("nats", "nats-py", "nats")
        if self.password is not None and self.user is None:
            raise ValueError("user: required with password")
        return self


class KafkaSinkConfig(SinkConfig):
    """Produce to a Kafka topic, keyed by route (a route's events stay in order)."""

    kind: Literal["kafka"] = "kafka"
    bootstrap_servers: list[str] = Field(default_factory=lambda: ["127.0.0.1:9092"], min_length=1)
    topic: str = Field("turnout-events", min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretRef | None = None

    @model_validator(mode="after")
    def _library(self) -> KafkaSinkConfig:
        _needs("aiokafka", "aiokafka", "kafka")
        if self.security_protocol.startswith("SASL") and (
            self.sasl_mechanism is None or self.sasl_username is None or not self.sasl_password
        ):
            raise ValueError(
                "SASL needs sasl_mechanism, sasl_username and sasl_password (a ${ENV} reference)"
            )
        return self


SINK_KINDS: dict[str, type[SinkConfig]] = {
    "jsonl": JsonlSinkConfig,
    "webhook": WebhookSinkConfig,
    "redis": RedisSinkConfig,
    "nats": NatsSinkConfig,
    "kafka": KafkaSinkConfig,
}


class _SinkKind(BaseModel):
    """Only a section's `kind`, checked first: an unknown kind is one error naming the known."""

    model_config = ConfigDict(extra="ignore")
    kind: str

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        if kind not in SINK_KINDS:
            raise ValueError(f"unknown sink kind {kind!r} (known: {', '.join(SINK_KINDS)})")
        return kind


def _sink_by_kind(value: Any) -> Any:
    if isinstance(value, SinkConfig) or not isinstance(value, dict):
        return value
    return SINK_KINDS[_SinkKind.model_validate(value).kind].model_validate(value)


# a sink section: its kind's model, serialised with that model's fields
SinkSection = Annotated[SerializeAsAny[SinkConfig], BeforeValidator(_sink_by_kind)]


class AlertRule(Strict):
    """One alert rule: when it holds, one message to the `notify` webhook sink; one more
    when it stops holding (recovery). Never one per request."""

    when: Literal["fallback_rate", "misconfigured", "budget_soft"]
    notify: str  # the name of a webhook sink
    route: str | None = None  # fallback_rate: one route (None: every route together)
    above: Probability = 0.2  # fallback_rate: the share of requests that fell back
    over: Duration = 300.0  # fallback_rate: the window the share is taken over
    min_requests: int = Field(5, ge=1)  # fallback_rate: fewer requests in the window say nothing
    # fallback_rate: a firing rule recovers when the share is at or below this (default 80% of
    # `above`): a share hovering at the threshold must not fire and recover over and over
    recover_below: Probability | None = None

    @model_validator(mode="after")
    def _recovery_below_the_threshold(self) -> AlertRule:
        if self.recover_below is not None and self.recover_below > self.above:
            raise ValueError(
                f"recover_below: {self.recover_below} is above `above` ({self.above}):"
                " a rule must recover at or below the share it fires above"
            )
        return self

    @property
    def recovers_at(self) -> float:
        return self.above * 0.8 if self.recover_below is None else self.recover_below


def check_sinks(sinks: list[SinkConfig], alerts: list[AlertRule], routes: Any) -> None:
    """Cross-references: unique sink names, alerts that notify a webhook sink, known routes."""
    seen: set[str] = set()
    for i, sink in enumerate(sinks):
        if sink.name in seen:
            raise ValueError(f"sinks.{i}.name: another sink is named {sink.name!r}")
        seen.add(sink.name)
    webhooks = {s.name for s in sinks if isinstance(s, WebhookSinkConfig)}
    for i, rule in enumerate(alerts):
        if rule.notify not in webhooks:
            known = ", ".join(sorted(webhooks)) or "none"
            raise ValueError(
                f"alerts.{i}.notify: no webhook sink named {rule.notify!r} (webhook sinks: {known})"
            )
        if rule.route is not None and rule.route not in routes:
            raise ValueError(f"alerts.{i}.route: unknown route {rule.route!r}")
