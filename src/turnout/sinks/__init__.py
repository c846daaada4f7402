"""Events out: the bus's events delivered to configured sinks (a JSONL file, a webhook,
Redis Streams, NATS JetStream, Kafka), and alert rules that notify a webhook sink.

Each sink is one queued bus subscription (`sink:<name>` in the bus's stats), so delivery
never blocks a request; see worker.py for batching, retries and the counters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from turnout.config.schema import Config
from turnout.config.secrets import SecretRedactor
from turnout.config.sinks import AlertRule, SinkConfig
from turnout.events import EventBus
from turnout.sinks.alerts import AlertEngine
from turnout.sinks.claims import AlertClaims, FileClaims, LocalClaims, make_claims
from turnout.sinks.exported import EXPORTERS, Exported, Exporter, exporter
from turnout.sinks.registry import make_sink
from turnout.sinks.worker import SinkWorker

__all__ = ["EXPORTERS", "Exported", "Exporter", "SinkWorker", "Sinks", "exporter"]


class Sinks:
    """The gateway's sinks: built from the config once, subscribed to its bus."""

    def __init__(
        self,
        configs: list[SinkConfig],
        alerts: list[AlertRule],
        bus: EventBus,
        redactor: Callable[[], SecretRedactor],
        claims: AlertClaims | None = None,
    ) -> None:
        notified = {rule.notify for rule in alerts}
        self.workers = {
            c.name: SinkWorker(c, make_sink(c), redactor, notified=c.name in notified)
            for c in configs
        }
        for worker in self.workers.values():
            worker.subscribe(bus)
        self.alerts = AlertEngine(alerts, bus, claims) if alerts else None

    def claim_alerts_in(self, directory: Path) -> None:
        """This process is one of a supervisor's workers (`--workers N`): without shared
        state, its alerts are claimed in the workers' directory, so one worker tells each."""
        if self.alerts is not None and isinstance(self.alerts.claims, LocalClaims):
            self.alerts.claims = FileClaims(directory)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per sink name: delivered, failed, dropped, errors, queued (see SinkStats)."""
        return {name: worker.stats() for name, worker in self.workers.items()}

    def alert_stats(self) -> dict[str, Any] | None:
        """Alerts raised so far and the rules' subjects now firing (None: no rules)."""
        return self.alerts.stats() if self.alerts is not None else None

    async def close(self) -> None:
        """After the bus has closed (its queues drained): the sinks' connections."""
        for worker in self.workers.values():
            await worker.close()
        if self.alerts is not None:
            await self.alerts.close()


def attach_sinks(config: Config, bus: EventBus, redactor: Callable[[], SecretRedactor]) -> Sinks:
    """The sinks (and alert rules) of `config`, subscribed to `bus`."""
    state = config.state
    claims = make_claims(state.backend, state.url, state.prefix) if config.alerts else None
    return Sinks(list(config.sinks), list(config.alerts), bus, redactor, claims)
