"""GET /metrics: the Prometheus text exposition of one gateway, or of every worker of
`turnout serve --workers N` (prometheus_client's multiprocess mode, whose files the
supervisor's PROMETHEUS_MULTIPROC_DIR holds: cli/workers.py)."""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from turnout.accounting.auth import AuthError
from turnout.dialects.openai.ingress import encode_error
from turnout.events import RequestFinished
from turnout.gateway import Gateway
from turnout.metrics.recorder import ChildRecorder, Instruments, TallyRecorder
from turnout.metrics.state import Mirror, StateCollector

log = logging.getLogger("turnout.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_MIRROR_EVERY = 1.0  # seconds between copies of a worker's state into the shared files


def multiprocess_dir() -> str | None:
    """The directory every worker's metric files are in, when there are workers."""
    return os.environ.get(MULTIPROC_ENV) or None


class MetricsEndpoint:
    """Subscribes the recorder to the gateway's bus (inline: a few additions per request)
    and answers GET /metrics. With `metrics: {enabled: false}` it records nothing and /metrics
    is a 404."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.enabled = gateway.config.metrics.enabled
        self.registry = CollectorRegistry(auto_describe=True)
        self.shared = multiprocess_dir()
        self._mirror: Mirror | None = None
        self._task: asyncio.Task[None] | None = None  # held: ends with the event loop
        if not self.enabled:
            return
        config = lambda: gateway.config  # the config serving now (a reload swaps it)
        state = StateCollector(gateway.health, gateway.accounting.ledger_stats, gateway.bus.stats)
        if self.shared is None:  # one process: plain numbers per request, families when scraped
            tallies = TallyRecorder(config)
            gateway.bus.subscribe(
                tallies.on_request, kinds=(RequestFinished,), inline=True, name="metrics"
            )
            self.registry.register(tallies.tallies)
            self.registry.register(state)  # read when scraped
            return
        recorder = ChildRecorder(Instruments(self.registry), config)
        gateway.bus.subscribe(
            recorder.on_request, kinds=(RequestFinished,), inline=True, name="metrics"
        )
        self._mirror = Mirror(state, self.registry)
        self._task = asyncio.get_running_loop().create_task(self._mirroring(), name="metrics")

    async def _mirroring(self) -> None:
        """Keeps this worker's state in the shared files, for whichever worker is scraped."""
        assert self._mirror is not None
        failures = 0
        while True:
            try:
                self._mirror.refresh()
            except Exception:  # a figure missing is better than a dead loop
                failures += 1
                if failures % 600 == 1:  # once, then every ten minutes while it lasts
                    log.exception("metrics: copying this worker's state failed (%d)", failures)
            await asyncio.sleep(_MIRROR_EVERY)

    async def __call__(self, http: web.Request) -> web.Response:
        if not self.enabled:
            raise web.HTTPNotFound()
        refused = await self._refused(http)
        if refused is not None:
            return refused
        return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def exposition(self) -> bytes:
        if self.shared is None:
            return generate_latest(self.registry)
        assert self._mirror is not None
        self._mirror.refresh()  # this worker's state as of now; the others' as of <1 s ago
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.shared)
        return generate_latest(registry)

    async def _refused(self, http: web.Request) -> web.Response | None:
        """The admin endpoints' rule (server/admin.py): with auth on, an admin key, unless
        the config made the metrics public. A refusal is in OpenAI's error shape."""
        if self.gateway.config.metrics.public:
            return None
        try:
            await self.gateway.operator(http.headers, http.remote)
        except AuthError as exc:
            refused = _error(exc.status, exc.message, exc.error_type, exc.code)
            refused.headers.update(exc.headers)
            return refused
        return None


def _error(status: int, message: str, error_type: str | None, code: str | None = None):
    body = encode_error(status, message, error_type=error_type, code=code)
    return web.Response(status=status, body=body, content_type="application/json")
