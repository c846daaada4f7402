"""The config schema. Every field that a user writes is declared here, typed and documented."""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    field_validator,
    model_validator,
)

from turnout.config.cache import CacheConfig
from turnout.config.fields import (
    Duration,
    SecretRef,
    Strict,
    is_loopback,
)
from turnout.config.metrics import MetricsConfig
from turnout.config.rollout import RolloutConfig
from turnout.config.sinks import AlertRule, SinkSection, check_sinks
from turnout.config.traces import TracesConfig
from turnout.model.json_schema import UnusableSchema, checked


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # slow clients, as nginx's client_header_timeout / client_body_timeout: a request's
    # headers must arrive whole within header_timeout (else the connection is closed), and
    # its body may pause at most body_timeout between two reads (else a 408)
    header_timeout: Duration = 60.0
    body_timeout: Duration = 60.0
    # connections one client address may hold open at once; the next one is closed at once.
    # Behind a load balancer every client shares its address: raise it, or 0 turns it off
    max_connections_per_client: int = Field(1024, ge=0)
    # on SIGTERM: in-flight requests get this long to finish, then open streams end with an
    # error event and waiting requests with a 503 (both ledgered as `shutdown`)
    shutdown_grace: Duration = 10.0


class Timeouts(Strict):
    connect: Duration = 2.0
    ttft: Duration = 10.0  # streaming: time to the first content token
    total: Duration = 120.0  # the whole attempt
    # streaming: the longest gap between chunks after the first token; a longer one is a
    # broken stream (None: no limit but `total`)
    idle: Duration | None = None


class TimeoutOverride(Strict):
    connect: Duration | None = None
    ttft: Duration | None = None
    total: Duration | None = None
    idle: Duration | None = None


class Price(Strict):
    """USD per 1M tokens."""

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)
    cached_input: float | None = Field(None, ge=0)


class ProviderConfig(Strict):
    """What every provider kind's config has. Each kind extends it with its own fields, in its
    own module (providers/openai.py, providers/sim.py, ...), and registers the model below."""

    kind: str
    base_url: str | None = None
    api_key: SecretRef | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # whether the kind serves embeddings (POST /embeddings): a kind's config model says so,
    # so that a model with `supports: [embeddings]` on another kind is refused at load
    embeddings: ClassVar[bool] = False


# Provider kind -> its config model. Filled by the providers layer (providers/registry.py) as
# each kind's module is imported: this file must not import the layers above it, yet a
# provider's section is validated whole, by its kind's model, when the config loads.
_PROVIDER_KINDS: dict[str, type[ProviderConfig]] = {}


def register_provider_kind(kind: str, model: type[ProviderConfig]) -> None:
    """Validate provider sections whose `kind` is `kind` with `model`."""
    _PROVIDER_KINDS[kind] = model


def provider_kinds() -> list[str]:
    return sorted(_PROVIDER_KINDS)


class _KindTag(BaseModel):
    """Only a section's `kind`, checked first: an unknown kind is one error at `kind` naming
    the known ones, not a list of complaints about fields some other kind would have."""

    model_config = ConfigDict(extra="ignore")
    kind: str

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        if kind not in _PROVIDER_KINDS:
            known = ", ".join(provider_kinds()) or "none registered"
            raise ValueError(f"unknown provider kind {kind!r} (known: {known})")
        return kind


def _by_kind(value: Any) -> Any:
    """A provider section -> its kind's config model (pydantic's errors keep their key path)."""
    if isinstance(value, ProviderConfig) or not isinstance(value, dict):
        return value  # built already, or not a mapping: ProviderConfig's own checks say so
    return _PROVIDER_KINDS[_KindTag.model_validate(value).kind].model_validate(value)


# a provider section: its kind's model, serialised with that model's fields
ProviderSection = Annotated[SerializeAsAny[ProviderConfig], BeforeValidator(_by_kind)]


# "embeddings" marks an embeddings model: it serves /v1/embeddings and never chat
# "prefill" marks an OpenAI-compatible server (vLLM, SGLang) that continues a last assistant
# message (`continue_final_message`): how a broken stream is continued there
Capability = Literal["tools", "json", "vision", "embeddings", "prefill"]


class Deployment(Strict):
    """One place a model is served from (a region, a base URL, a key): its own provider
    section. A model's deployments are tried best first: the lowest `priority`, then, among
    equal priorities, the lower recent TTFT (routing/deployments.py)."""

    provider: str
    model: str | None = None  # the upstream's name here; defaults to the model's
    priority: int = 0  # lower is preferred
    name: str | None = None  # the label headers and health show; defaults to `provider`

    @property
    def label(self) -> str:
        return self.name or self.provider


class ModelConfig(Strict):
    # one deployment (`provider`), or several (`deployments`): exactly one of the two
    provider: str | None = None
    deployments: list[Deployment] | None = Field(None, min_length=1)
    model: str | None = None  # the upstream's name; defaults to this model's key
    price: Price | None = None  # None: the shipped default table's price for `model`
    context_window: int | None = Field(None, gt=0)
    # the most it can write in one answer: a request asking for more is clamped to this
    max_output_tokens: int | None = Field(None, gt=0)
    supports: list[Capability] = Field(default_factory=list)
    timeout: TimeoutOverride = TimeoutOverride()

    @model_validator(mode="after")
    def _one_placement(self) -> ModelConfig:
        if self.provider is not None and self.deployments is not None:
            raise ValueError(
                "give either provider (one deployment) or deployments (several), not both"
            )
        if self.provider is None and self.deployments is None:
            raise ValueError("provider: required (or deployments: a list of them)")
        if self.deployments is not None:
            labels = [d.label for d in self.deployments]
            twice = sorted({label for label in labels if labels.count(label) > 1})
            if twice:
                raise ValueError(
                    f"deployments: {', '.join(twice)} named twice (give each a distinct `name`)"
                )
        return self

    def placements(self) -> list[Deployment]:
        """Where this model is served: its deployments, or its one provider as one."""
        if self.deployments is not None:
            return self.deployments
        assert self.provider is not None  # (the validator above)
        return [Deployment(provider=self.provider, model=self.model)]


class RetryConfig(Strict):
    attempts: int = Field(1, ge=1, le=10)  # tries per target per request
    backoff: Duration = 0.2  # first wait; doubles; a Retry-After longer than it wins
    max_backoff: Duration = 5.0


class StaleIfError(Strict):
    max_age: Duration = 3600.0  # serve a stored answer up to this old when nothing can answer


class QueueConfig(Strict):
    max_wait: Duration = 30.0  # wait this long for a target to come back before a 503


class Consistency(Strict):
    """Keep a session's requests on one model, so a workflow's steps succeed or fail together."""

    mode: Literal["session"] = "session"
    # prefer these models when healthy, else stay on the session's current one (plan/coach)
    prefer: list[str] = Field(default_factory=list)
    ttl: Duration = 3600.0  # a session unseen this long is forgotten


class GuardConfig(Strict):
    """The structured-output guard: a JSON answer that does not parse or validate is a failure."""

    retry_same: int = Field(0, ge=0, le=3)  # tries again on the same model before moving on
    buffer_streams: bool = False  # validate streamed JSON too (the client waits for the whole)


class HedgeConfig(Strict):
    """A second attempt on the route's next target when the first is slow (execute/hedge.py):
    the first to answer wins, the other is cancelled."""

    # no first token (a stream) or no answer (a whole one) by then: a duration, or `p95`,
    # the target's recent p95 for this prompt size (TTFT for streams, latency for whole ones)
    after: Duration | Literal["p95"] = 0.8
    # hedges at most this share of the route's requests (a token bucket refilled by requests)
    max_extra: float = Field(0.1, gt=0, le=1)
    floor: Duration = 1.0  # `after: p95` while health has too few samples of the target


class CaptureConfig(Strict):
    """Keep prompts and answers of a route (off by default), to replay against a candidate."""

    # built-in rules (email, phone, card, secret, national_id; see accounting/capture.py) or
    # regular expressions; matches are replaced with [redacted] before anything is written,
    # and so is every secret in this config, whatever the rules
    redact: list[str] = Field(default_factory=lambda: ["email", "card", "secret", "national_id"])
    sample: float = Field(1.0, gt=0, le=1)  # share of requests kept


# The route policy names, a live view of routing's registry (routing/policies.py POLICIES,
# registered on routing's first import): config sits below routing, so it is told the names
# rather than importing them. Until routing has registered, `policy` stays an unchecked name
# and the planner refuses an unknown one when it builds the plans.
_ROUTE_POLICIES: Collection[str] = ()


def register_route_policies(names: Collection[str]) -> None:
    global _ROUTE_POLICIES  # set once, by routing, on its first import
    _ROUTE_POLICIES = names


class RouteConfig(Strict):
    targets: list[str] = Field(min_length=1)
    timeout: Timeouts = Timeouts()
    retry: RetryConfig = RetryConfig()
    stale_if_error: StaleIfError | None = None
    queue: QueueConfig | None = None
    policy: str = "priority"  # a name in routing's policy registry (see _ROUTE_POLICIES)
    weights: dict[str, float] = Field(default_factory=dict)  # policy weighted: model -> share
    consistency: Consistency | None = None
    output_schema: dict[str, Any] | None = None  # every answer must be JSON valid against it
    guard: GuardConfig = GuardConfig()
    # savings are reported against this model: what the same tokens would have cost there
    baseline: str | None = None
    # an embeddings route over different models: their vectors are of different spaces, so a
    # fallback would put a vector of one into a client's index of the other. Refused unless
    # this says the clients cope (one model in several places is `deployments:` instead)
    mixed_vectors: bool = False
    capture: CaptureConfig | None = None
    # a max_tokens larger than a target can give: clamp it to what the target can (clients
    # send large defaults), or skip the target (strict)
    max_tokens: Literal["clamp", "strict"] = "clamp"
    rollout: RolloutConfig | None = None  # a candidate model tried stage by stage
    # a committed stream that breaks or stalls: end it with an explicit error event, or have
    # the next target continue the answer (execute/continuation.py)
    on_stream_break: Literal["error", "continue"] = "error"
    hedge: HedgeConfig | None = None  # a second attempt when the first is slow
    cache: CacheConfig | None = None  # answers to identical requests served again

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, policy: str) -> str:
        if _ROUTE_POLICIES and policy not in _ROUTE_POLICIES:
            raise ValueError(f"must be one of {', '.join(_ROUTE_POLICIES)}, not {policy!r}")
        return policy

    @model_validator(mode="after")
    def _check_policy(self) -> RouteConfig:
        if self.policy == "weighted":
            if not self.weights:
                raise ValueError("weights: required for policy 'weighted', e.g. {a: 90, b: 10}")
            unknown = set(self.weights) - set(self.targets)
            if unknown:
                raise ValueError(f"weights: {', '.join(sorted(unknown))} not among the targets")
            if any(w < 0 for w in self.weights.values()) or not sum(self.weights.values()):
                raise ValueError("weights: must be non-negative and not all zero")
        if self.consistency:
            unknown = set(self.consistency.prefer) - set(self.targets)
            if unknown:
                raise ValueError(
                    f"consistency.prefer: {', '.join(sorted(unknown))} not among the targets"
                )
        if self.output_schema is not None:
            # the same check as a client's schema: no remote references, bounded size
            try:
                checked(self.output_schema)
            except UnusableSchema as exc:
                raise ValueError(f"output_schema: {exc}") from None
        return self


class BreakerConfig(Strict):
    """Per-model circuit breaker. Defaults and their reasons: docs/health.md."""

    window: int = Field(20, ge=1)  # the last N calls...
    window_time: Duration = 60.0  # ...no older than this
    failure_rate: float = Field(0.5, gt=0, le=1)  # open at this share of failures...
    min_calls: int = Field(10, ge=1)  # ...once the window holds this many calls
    consecutive_failures: int = Field(5, ge=1)  # or at this many failures in a row
    open_for: Duration = 5.0  # first open period; doubles after each failed probe
    max_open_for: Duration = 60.0


class HealthConfig(Strict):
    breaker: BreakerConfig = BreakerConfig()
    rate_limit_cooldown: Duration = 1.0  # a 429 that says nothing of when to come back
    quota_cooldown: Duration = 3600.0  # credits or daily allocation exhausted
    misconfigured_probe_interval: Duration = 60.0  # re-try a rejected key this often
    probe_interval: Duration = 1.0  # how often idle half-open models get a synthetic probe


class StateConfig(Strict):
    backend: Literal["memory", "redis"] = "memory"
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "turnout"  # key and channel prefix: one per gateway fleet


def _off(value: Any) -> Any:
    return "off" if value is False else value  # YAML reads a bare `off` as false


class LedgerConfig(Strict):
    backend: Annotated[Literal["sqlite", "postgres", "off"], BeforeValidator(_off)] = "sqlite"
    path: str | None = None  # sqlite: the database file (default: <data_dir>/turnout.db)
    dsn: SecretRef | None = None  # postgres: ${ENV} reference to a DSN (it holds a password)


class JWTConfig(Strict):
    """Bearer JWTs mapped to a gateway key by a claim (its value: a key's name or id)."""

    algorithm: Literal["HS256", "RS256"] = "HS256"
    secret: SecretRef | None = None  # HS256
    jwks_file: str | None = None  # RS256: a JSON Web Key Set file
    claim: str = "sub"
    audience: str | None = None
    issuer: str | None = None

    @model_validator(mode="after")
    def _check_keys(self) -> JWTConfig:
        if self.algorithm == "HS256" and self.secret is None:
            raise ValueError("secret: required for HS256 (a ${ENV} reference)")
        if self.algorithm == "RS256" and not self.jwks_file:
            raise ValueError("jwks_file: required for RS256")
        return self


class AuthConfig(Strict):
    # None: required, except on a loopback bind (where turning it off is allowed, with a
    # warning); false on any other bind is a config error
    required: bool | None = None
    jwt: JWTConfig | None = None


class BudgetConfig(Strict):
    scope: Literal["route", "provider"]  # per-key budgets live on the key itself
    name: str
    daily_usd: float | None = Field(None, ge=0)
    monthly_usd: float | None = Field(None, ge=0)
    soft: float = Field(0.8, gt=0, le=1)  # share of a budget that raises an alert event
    on_exceed: Literal["block", "downgrade"] = "block"


class Config(Strict):
    server: ServerConfig = ServerConfig()
    providers: dict[str, ProviderSection] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    health: HealthConfig = HealthConfig()
    state: StateConfig = StateConfig()
    data_dir: str | None = None  # default: $TURNOUT_DATA_DIR, else ~/.local/share/turnout
    ledger: LedgerConfig = LedgerConfig()
    auth: AuthConfig = AuthConfig()
    budgets: list[BudgetConfig] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics: MetricsConfig = MetricsConfig()  # GET /metrics (Prometheus)
    traces: TracesConfig = TracesConfig()  # OpenTelemetry spans over OTLP (optional extra)
    sinks: list[SinkSection] = Field(default_factory=list)  # events out (config/sinks.py)
    alerts: list[AlertRule] = Field(default_factory=list)  # rules that notify a webhook sink

    def _check_embed_route(self, route: str, embed: str) -> None:
        """A semantic cache's `embed_route` is an embeddings route or model of this config."""
        route_targets = self.routes[embed].targets if embed in self.routes else None
        targets = route_targets if route_targets is not None else [embed]
        if not all(t in self.models and "embeddings" in self.models[t].supports for t in targets):
            raise ValueError(
                f"routes.{route}.cache.embed_route: {embed!r} is not an embeddings route or"
                " model (one whose models have `supports: [embeddings]`)"
            )
        if len(set(targets)) > 1:  # (a mixed_vectors route): vectors of two spaces compared
            raise ValueError(
                f"routes.{route}.cache.embed_route: {embed!r} fails over between embeddings"
                " models; similarity means nothing across them: use a route of one model"
            )

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        for name, model in self.models.items():
            for i, placement in enumerate(model.placements()):
                at = "provider" if model.deployments is None else f"deployments.{i}.provider"
                if placement.provider not in self.providers:
                    raise ValueError(
                        f"models.{name}.{at}: unknown provider {placement.provider!r}"
                        f" (known: {', '.join(sorted(self.providers)) or 'none'})"
                    )
                provider = self.providers[placement.provider]
                if "embeddings" in model.supports and not provider.embeddings:
                    raise ValueError(
                        f"models.{name}.supports: provider {placement.provider!r} is of kind"
                        f" {provider.kind!r}, which has no embeddings endpoint (use an"
                        " OpenAI-compatible provider, kind 'openai')"
                    )
        if self.auth.required is False and not is_loopback(self.server.host):
            raise ValueError(
                f"auth.required: false is allowed only on a loopback bind, not {self.server.host}"
            )
        if self.ledger.backend == "postgres" and self.ledger.dsn is None:
            raise ValueError("ledger.dsn: required for backend postgres (a ${ENV} reference)")
        for i, budget in enumerate(self.budgets):
            known = self.routes if budget.scope == "route" else self.providers
            if budget.name not in known:
                raise ValueError(f"budgets.{i}.name: no {budget.scope} named {budget.name!r}")
        for name, route in self.routes.items():
            for i, target in enumerate(route.targets):
                if target not in self.models:
                    raise ValueError(
                        f"routes.{name}.targets.{i}: unknown model {target!r}"
                        f" (known: {', '.join(sorted(self.models)) or 'none'})"
                    )
            if name in self.models:
                raise ValueError(f"routes.{name}: a route cannot share a name with a model")
            if "@" in name and name in _deployment_keys(self.models):
                raise ValueError(f"routes.{name}: a route cannot share a name with a deployment")
            embedding = [t for t in route.targets if "embeddings" in self.models[t].supports]
            if embedding and len(embedding) < len(route.targets):
                chat = [t for t in route.targets if t not in embedding]
                raise ValueError(
                    f"routes.{name}.targets: embeddings models ({', '.join(embedding)}) and chat"
                    f" models ({', '.join(chat)}) cannot share a route"
                )
            if len(set(embedding)) > 1 and not route.mixed_vectors:
                raise ValueError(
                    f"routes.{name}.targets: embeddings models {', '.join(embedding)} make"
                    " vectors of different spaces: a fallback would mix them in your index."
                    " Give one model several `deployments:`, or set"
                    f" routes.{name}.mixed_vectors: true if your clients check"
                    " x-turnout-model"
                )
            if route.baseline is not None and route.baseline not in self.models:
                raise ValueError(f"routes.{name}.baseline: unknown model {route.baseline!r}")
            rollout = route.rollout
            if rollout is not None and rollout.candidate not in self.models:
                raise ValueError(
                    f"routes.{name}.rollout.candidate: unknown model {rollout.candidate!r}"
                )
            if rollout is not None and rollout.candidate in route.targets:
                raise ValueError(
                    f"routes.{name}.rollout.candidate: {rollout.candidate!r} is already a"
                    " target of the route: a candidate is a model the route does not use yet"
                )
            if route.cache is not None and route.cache.embed_route is not None:
                self._check_embed_route(name, route.cache.embed_route)
        check_sinks(self.sinks, self.alerts, self.routes)
        return self


def _deployment_keys(models: dict[str, ModelConfig]) -> set[str]:
    """`MODEL@DEPLOYMENT` of every deployment: names a client may force one deployment by."""
    return {f"{name}@{d.label}" for name, model in models.items() for d in model.deployments or ()}
