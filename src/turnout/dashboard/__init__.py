"""The dashboard at GET /dashboard: a static page whose script polls /dashboard/data, built
from health's per-route view and an aggregator of the bus's events (aggregator, view,
endpoint)."""

from turnout.dashboard.endpoint import DashboardEndpoints

__all__ = ["DashboardEndpoints"]
