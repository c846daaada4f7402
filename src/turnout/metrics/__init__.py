"""Prometheus metrics: counted from the event bus per request (recorder), read from health,
the ledger and the bus at scrape time (state), served at GET /metrics (endpoint)."""

from turnout.metrics.endpoint import MULTIPROC_ENV, MetricsEndpoint

__all__ = ["MULTIPROC_ENV", "MetricsEndpoint"]
