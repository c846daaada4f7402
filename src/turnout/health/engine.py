"""The health engine: each model's state, derived only from attempt outcomes.

Error classes drive different reactions (which count against health: `model.errors.POLICY`):
- server_error, overloaded, timeout, connection, stream_broken, invalid_output: health
  failures, counted by the model's circuit breaker;
- rate_limited: not a failure; the model cools down until max(Retry-After, the reset of the
  exhausted rate-limit window, `rate_limit_cooldown`), then returns by itself;
- quota: a long cooldown (`quota_cooldown`), an error-level log line and a flag;
- auth: misconfigured until a probe (or a config reload) succeeds: the whole provider for a
  rejected key, this model only for a 403 or 404 (no access to this model, no such model);
- client_error (a 403 refusing the request's content included), context_length: say
  nothing about the model's health; a client's error is not even its last error.

Changes that other gateway processes must know of are published through the state store;
each transition of this process's view (breaker opened, half-open, closed; cooldown started
and ended; misconfigured; recovered) is also published on the event bus as HealthChanged.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from turnout import clock
from turnout.config.schema import HealthConfig, ModelConfig
from turnout.events import AttemptFinished, HealthChanged, HealthState, Publish
from turnout.health.breaker import Breaker, BreakerState
from turnout.health.latency import LatencyStats
from turnout.health.ratelimits import RateLimits
from turnout.health.state import MemoryStore, StateStore
from turnout.model import ErrorClass, Outcome
from turnout.model.errors import POLICY

log = logging.getLogger("turnout.health")

_WINDOW = 200  # recent attempts kept per model for its error rate
_ADOPTED = "shared by another gateway process"
_BREAKER_EVENTS = {
    BreakerState.OPEN: HealthState.OPENED,
    BreakerState.HALF_OPEN: HealthState.HALF_OPEN,
    BreakerState.CLOSED: HealthState.CLOSED,
}


def _nobody(_: object) -> None:
    """Where a HealthEngine built without a bus sends its events."""


def model_scoped(status: int | None) -> bool:
    """Whether an auth failure is this model's alone. A rejected key (401, or Gemini's 400
    API_KEY_INVALID) is the whole provider's; a 404 is a model name the upstream does not
    know, and a 403 is refused access to this model (or is unexplained): one 403 must never
    take every model of a provider out, so it stays with the model that answered it."""
    return status in (403, 404)


class ModelHealth:
    def __init__(
        self,
        name: str,
        provider: str,
        config: HealthConfig,
        deployment: tuple[str, str, int] | None = None,
    ) -> None:
        self.name = name  # the model's name, or `NAME@DEPLOYMENT` (its health key)
        self.provider = provider
        # one of a model's several deployments: (model, label, priority)
        self.deployment = deployment
        self.breaker = Breaker(config.breaker)
        self.cooldown_until = 0.0
        self.cooldown_reason: str | None = None  # rate_limited | quota
        self.cooling = False  # a cooldown announced as started, not yet as ended
        self.limits = RateLimits()
        self.latency = LatencyStats()
        self.recent: deque[bool] = deque(maxlen=_WINDOW)
        self.requests = 0
        self.failures = 0
        self.last_error: dict[str, Any] | None = None
        self.updated = 0.0  # when the shared part last changed (last writer wins)

    def shared_document(self) -> dict[str, Any]:
        return {
            "breaker": self.breaker.state.value,
            "open_until": self.breaker.open_until,
            "level": self.breaker.level,
            "cooldown_until": self.cooldown_until,
            "cooldown_reason": self.cooldown_reason,
            "at": self.updated,
        }

    @property
    def error_rate(self) -> float:
        return (self.recent.count(False) / len(self.recent)) if self.recent else 0.0


class HealthEngine:
    def __init__(
        self, config: HealthConfig, store: StateStore | None = None, publish: Publish | None = None
    ) -> None:
        self.config = config
        self.publish = publish or _nobody  # HealthChanged events, to the gateway's bus
        self.store = store or MemoryStore()
        self.models: dict[str, ModelHealth] = {}
        # "provider:NAME" (a rejected key) or "model:NAME" (a model name the upstream does not
        # know) -> {reason, at, probe_at[, local]}
        self.misconfigured: dict[str, dict[str, Any]] = {}

    # --- set-up and sharing -------------------------------------------------------------

    def register(
        self, model: str, provider: str, deployment: tuple[str, str, int] | None = None
    ) -> None:
        """`model`: a health key; `deployment`: (model, label, priority) when it is one of a
        model's several deployments (its key is then `MODEL@LABEL`)."""
        if model not in self.models:
            self.models[model] = ModelHealth(model, provider, self.config, deployment)

    def register_model(self, name: str, model: ModelConfig) -> None:
        """A configured model: its health, or each of its deployments' own."""
        if model.deployments is None:
            assert model.provider is not None  # (config: one of provider, deployments)
            self.register(name, model.provider)
            return
        for deployment in model.deployments:
            key = f"{name}@{deployment.label}"
            self.register(key, deployment.provider, (name, deployment.label, deployment.priority))

    def model_of(self, key: str) -> str:
        """The configured model a health key belongs to (itself, but for a deployment)."""
        health = self.models.get(key)
        return health.deployment[0] if health is not None and health.deployment else key

    async def start(self) -> None:
        await self.store.start(self.apply_remote)

    async def close(self) -> None:
        await self.store.close()

    def apply_remote(self, key: str, document: dict[str, Any]) -> None:
        """Another gateway process changed a model's or provider's state."""
        kind, _, name = key.partition(":")
        if kind == "model" and name in self.models:
            health = self.models[name]
            if document.get("at", 0) < health.updated:
                return
            now = clock.now()
            was = health.breaker.state, health.cooldown_until > now
            health.breaker.adopt(document["breaker"], document["open_until"], document["level"])
            health.cooldown_until = document["cooldown_until"]
            health.cooldown_reason = document["cooldown_reason"]
            health.updated = document["at"]
            self._announce_adopted(health, was, now)
        elif kind == "misconfigured":
            current = self.misconfigured.get(name)
            if current and (current.get("local") or document.get("at", 0) < current["at"]):
                return
            if document.get("reason"):
                self.misconfigured[name] = {
                    "reason": document["reason"],
                    "at": document["at"],
                    "probe_at": document["at"] + self.config.misconfigured_probe_interval,
                }
                if current is None:
                    reason = document["reason"]
                    self._announce_scope(name, HealthState.MISCONFIGURED, reason, clock.now())
            elif self.misconfigured.pop(name, None) is not None:
                self._announce_scope(name, HealthState.RECOVERED, _ADOPTED, clock.now())

    def _announce_adopted(
        self, health: ModelHealth, was: tuple[BreakerState, bool], now: float
    ) -> None:
        """A state learnt from another process is a change here too: subscribers (metrics,
        the dashboard) see the same transitions in every process."""
        breaker, cooling = was
        if health.breaker.state != breaker:
            self._announce(health, _BREAKER_EVENTS[health.breaker.state], _ADOPTED, now)
        if (health.cooldown_until > now) != cooling:
            state = HealthState.COOLDOWN_ENDED if cooling else HealthState.COOLDOWN_STARTED
            self._announce(health, state, health.cooldown_reason or _ADOPTED, now)

    def on_attempt(self, event: AttemptFinished) -> None:
        """The bus subscriber (inline: outcomes must be learnt in order, and this is O(1))."""
        self.record(event.outcome)

    def _announce(
        self, health: ModelHealth, state: HealthState, reason: str | None, now: float
    ) -> None:
        self.publish(HealthChanged(health.name, health.provider, state, reason, now))

    def _announce_scope(
        self, scope: str, state: HealthState, reason: str | None, now: float
    ) -> None:
        """A misconfiguration's scope: "provider:NAME" (model None) or "model:NAME"."""
        kind, _, name = scope.partition(":")
        if kind == "model":
            health = self.models.get(name)
            provider = health.provider if health is not None else ""
            self.publish(HealthChanged(name, provider, state, reason, now))
        else:
            self.publish(HealthChanged(None, name, state, reason, now))

    def _publish_model(self, health: ModelHealth, now: float) -> None:
        health.updated = now
        self.store.publish(f"model:{health.name}", health.shared_document())

    # --- misconfiguration -----------------------------------------------------------------

    def mark_unusable(self, provider: str, reason: str) -> None:
        """A provider this process cannot use at all (its key's variable is unset): local
        to this process, never shared (another process may have the key) and never probed."""
        log.error("provider %s is misconfigured: %s", provider, reason)
        now = clock.now()
        self.misconfigured[f"provider:{provider}"] = {
            "reason": reason,
            "at": now,
            "probe_at": float("inf"),
            "local": True,
        }
        self.publish(HealthChanged(None, provider, HealthState.MISCONFIGURED, reason, now))

    def mark_misconfigured(self, scope: str, reason: str, now: float | None = None) -> None:
        """`scope`: "provider:NAME" for a rejected key, "model:NAME" for a rejected model."""
        now = clock.now() if now is None else now
        current = self.misconfigured.get(scope)
        if current is None or current["reason"] != reason:
            log.error("%s is misconfigured: %s", scope.replace(":", " ", 1), reason)
            self._announce_scope(scope, HealthState.MISCONFIGURED, reason, now)
        self.misconfigured[scope] = {
            "reason": reason,
            "at": now,
            "probe_at": now + self.config.misconfigured_probe_interval,
        }
        self.store.publish(f"misconfigured:{scope}", {"reason": reason, "at": now})

    def provider_replaced(self, provider: str) -> None:
        """A reload changed this provider's section (a new key, say): an unusable mark is
        forgotten (the new section is judged afresh) and a rejected key is probed at once
        rather than at its next interval."""
        scope = f"provider:{provider}"
        entry = self.misconfigured.get(scope)
        if entry is None:
            return
        if entry.get("local"):
            del self.misconfigured[scope]
        else:
            entry["probe_at"] = clock.now()

    def _misconfiguration(self, health: ModelHealth) -> dict[str, Any] | None:
        if not self.misconfigured:
            return None  # the usual case, on every request: no strings built
        return self.misconfigured.get(f"provider:{health.provider}") or self.misconfigured.get(
            f"model:{health.name}"
        )

    def _clear_misconfigured(self, health: ModelHealth, outcome: Outcome, now: float) -> None:
        for scope in (f"provider:{health.provider}", f"model:{health.name}"):
            entry = self.misconfigured.get(scope)
            # a success proves the key only when it was sent after the key was rejected: a
            # long stream begun before the 401 still ends well, and would heal it at once
            if entry is not None and not entry.get("local") and outcome.started >= entry["at"]:
                del self.misconfigured[scope]
                log.warning("%s answered again: no longer misconfigured", scope.replace(":", " "))
                self.store.publish(f"misconfigured:{scope}", {"reason": None, "at": now})
                self._announce_scope(scope, HealthState.RECOVERED, entry["reason"], now)

    # --- routing decisions (hot path: memory only) -----------------------------------------

    def skip_reason(
        self, model: str, now: float, prompt_tokens: int = 0, max_output: int = 0
    ) -> str | None:
        """Why a request should not go to `model` now, or None to try it.

        May grant this request the breaker's half-open probe, so call it only for a target
        that will really be tried if it returns None."""
        health = self.models[model]
        misconfigured = self._misconfiguration(health)
        if misconfigured is not None:
            if now < misconfigured["probe_at"]:
                return "misconfigured"
            misconfigured["probe_at"] = now + self.config.misconfigured_probe_interval
            return None  # this request is the probe of the rejected key
        if now < health.cooldown_until:
            return f"{health.cooldown_reason}({health.cooldown_until - now:.1f}s)"
        if health.cooling:  # the first request after a cooldown tells that it has ended
            health.cooling = False
            self._announce(health, HealthState.COOLDOWN_ENDED, health.cooldown_reason, now)
        if health.limits.windows:
            until = health.limits.blocked_until(now, prompt_tokens, max_output)
            if until is not None:
                return f"rate_limited(predicted {until - now:.1f}s)"
        was_open = health.breaker.state is BreakerState.OPEN
        if not health.breaker.allow(now):
            return f"open({max(0.0, health.breaker.open_until - now):.1f}s)"
        if was_open:  # allowed: the open period is over and this request is the probe
            self._announce(health, HealthState.HALF_OPEN, "open period over", now)
        return None

    def available_at(self, model: str, now: float) -> float:
        """When `model` is expected to take requests again (now, if it does)."""
        health = self.models[model]
        misconfigured = self._misconfiguration(health)
        candidates = [now]
        if misconfigured is not None:
            candidates.append(misconfigured["probe_at"])
        candidates.append(health.cooldown_until)
        if health.breaker.state is BreakerState.OPEN:
            candidates.append(health.breaker.open_until)
        return max(candidates)

    # --- learning from outcomes -------------------------------------------------------------

    def record(self, outcome: Outcome) -> None:
        key = outcome.model
        if outcome.deployment is not None:  # (a string built only for such models)
            key = f"{key}@{outcome.deployment}"
        health = self.models.get(key)
        if health is None:
            return
        # the attempt's end on turnout's clock (started + latency would add a real duration
        # to a simulated time); an outcome built by hand has none: both clocks are real there
        now = outcome.ended or outcome.started + outcome.latency
        if outcome.headers:
            health.limits.update(outcome.headers, outcome.headers_at or now)
        if not outcome.probe:
            health.requests += 1
        if outcome.ok:
            self._on_success(health, outcome, now)
        else:
            self._on_failure(health, outcome, now)

    def _on_success(self, health: ModelHealth, outcome: Outcome, now: float) -> None:
        health.recent.append(True)
        prompt = outcome.usage.prompt_tokens if outcome.usage else 0
        if not outcome.probe:
            health.latency.add(prompt, outcome.latency, outcome.ttft)
        if self.misconfigured:
            self._clear_misconfigured(health, outcome, now)
        changed = health.breaker.on_success(now)
        if changed:
            self._announce(health, HealthState.CLOSED, "probe succeeded", now)
        if health.cooldown_until > now and health.cooldown_reason == "quota":
            health.cooldown_until, changed = 0.0, True  # a success ends a quota cooldown early
            if health.cooling:
                health.cooling = False
                self._announce(health, HealthState.COOLDOWN_ENDED, "quota", now)
        if changed:
            log.warning("model %s is healthy again", health.name)
        # requests left at zero: the next one would be a 429, so stop before it
        until = health.limits.blocked_until(now, 0, 0)
        if until is not None and until > health.cooldown_until:
            health.cooldown_until, health.cooldown_reason = until, "rate_limited"
            changed = True
            self._started_cooling(health, now)
        if changed:
            self._publish_model(health, now)

    def _on_failure(self, health: ModelHealth, outcome: Outcome, now: float) -> None:
        error_class = outcome.error_class
        if error_class is ErrorClass.CLIENT_ERROR:
            # the client's request was refused (and its words may quote the client's input):
            # nothing about this model, so nothing is kept
            health.breaker.release_probe()
            return
        health.last_error = {
            "class": error_class.value if error_class else None,
            "status": outcome.status,
            "message": outcome.message,
            "at": outcome.started,
        }
        if error_class is not None and POLICY[error_class].counts_against_health:
            health.recent.append(False)
            health.failures += 1
            if health.breaker.on_failure(now):
                log.warning(
                    "breaker opened for model %s for %.1fs after %s",
                    health.name,
                    health.breaker.open_until - now,
                    health.last_error["class"],
                )
                self._publish_model(health, now)
                self._announce(health, HealthState.OPENED, health.last_error["class"], now)
            return
        health.breaker.release_probe()
        if error_class is ErrorClass.RATE_LIMITED:
            wait = max(
                outcome.retry_after or 0.0,
                health.limits.exhausted_reset(now) - now,
                self.config.rate_limit_cooldown,
            )
            self._cool_down(health, now, wait, "rate_limited")
        elif error_class is ErrorClass.QUOTA:
            log.error("model %s: quota exhausted: %s", health.name, outcome.message)
            wait = max(outcome.retry_after or 0.0, self.config.quota_cooldown)
            self._cool_down(health, now, wait, "quota")
        elif error_class is ErrorClass.AUTH:
            scope = (
                f"model:{health.name}"
                if model_scoped(outcome.status)
                else f"provider:{health.provider}"
            )
            reason = f"HTTP {outcome.status} from model {health.name}: {outcome.message}"
            self.mark_misconfigured(scope, reason, now)

    def _cool_down(self, health: ModelHealth, now: float, seconds: float, reason: str) -> None:
        until = now + seconds
        if until > health.cooldown_until or health.cooldown_reason != reason:
            health.cooldown_until, health.cooldown_reason = until, reason
            self._publish_model(health, now)
            self._started_cooling(health, now)

    def _started_cooling(self, health: ModelHealth, now: float) -> None:
        """Announced once per cooldown: one extended while it runs is the same cooldown."""
        if not health.cooling:
            health.cooling = True
            self._announce(health, HealthState.COOLDOWN_STARTED, health.cooldown_reason, now)

    # --- probes ---------------------------------------------------------------------------------

    def due_probes(self, now: float) -> list[str]:
        """Models an idle gateway should send a synthetic probe to now."""
        due = []
        for name, health in self.models.items():
            misconfigured = self._misconfiguration(health)
            if misconfigured is not None:
                if now >= misconfigured["probe_at"]:
                    due.append(name)
            elif now >= health.cooldown_until and health.breaker.waiting_for_probe(now):
                due.append(name)
        return due

    # --- reporting --------------------------------------------------------------------------------

    def state(self, model: str, now: float | None = None) -> dict[str, Any]:
        """The model's state for people: healthy, open until T, rate-limited until T, ..."""
        now = clock.now() if now is None else now
        health = self.models[model]
        misconfigured = self._misconfiguration(health)
        if misconfigured is not None:
            return {"state": "misconfigured", "reason": misconfigured["reason"]}
        if now < health.cooldown_until:
            state = "quota_exhausted" if health.cooldown_reason == "quota" else "rate_limited"
            return {"state": state, "until": health.cooldown_until}
        until = health.limits.blocked_until(now, 0, 0) if health.limits.windows else None
        if until is not None:
            return {"state": "rate_limited", "until": until}
        if health.breaker.state is BreakerState.OPEN and now < health.breaker.open_until:
            return {"state": "open", "until": health.breaker.open_until}
        if health.breaker.state is not BreakerState.CLOSED:
            return {"state": "half_open"}
        return {"state": "healthy"}

    def snapshot(self) -> dict[str, Any]:
        now = clock.now()
        models: dict[str, Any] = {}
        deployments: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
        for name, health in self.models.items():
            latency = health.latency.summary()
            entry = models[name] = {
                "provider": health.provider,
                **self.state(name, now),
                "breaker": health.breaker.state.value,
                "requests": health.requests,
                "failures": health.failures,
                "error_rate": round(health.error_rate, 4),
                "ttft_p50_ms": latency["ttft"]["p50_ms"],
                "ttft_p95_ms": latency["ttft"]["p95_ms"],
                "latency_p50_ms": latency["total"]["p50_ms"],
                "latency_p95_ms": latency["total"]["p95_ms"],
                "latency": latency,
                "last_error": health.last_error,
            }
            if health.deployment is not None:
                model, label, priority = health.deployment
                entry["priority"] = priority
                deployments.setdefault(model, []).append((priority, label, models.pop(name)))
        for model, entries in deployments.items():
            models[model] = _deployments_view(entries)
        return {
            "models": models,
            "providers": {
                scope.split(":", 1)[1]: {
                    "state": "misconfigured",
                    "reason": entry["reason"],
                    "since": entry["at"],
                }
                for scope, entry in self.misconfigured.items()
                if scope.startswith("provider:")
            },
            "state_backend": {"shared": self.store.shared},
        }


def _deployments_view(entries: list[tuple[int, str, dict[str, Any]]]) -> dict[str, Any]:
    """A model with several deployments, as people read it: the state of the deployment
    that serves now (the most preferred healthy one, else the most preferred), and each
    deployment's own state under `deployments`."""
    entries.sort(key=lambda e: e[0])
    healthy = [e for e in entries if e[2]["state"] == "healthy"]
    _, label, active = (healthy or entries)[0]
    return {
        **active,
        "deployment": label,
        "deployments": {label: entry for _, label, entry in entries},
    }
