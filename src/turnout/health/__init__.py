"""Health: per-model and per-provider state, derived only from attempt outcomes."""

from turnout.health.tracker import HealthTracker, ModelHealth

__all__ = ["HealthTracker", "ModelHealth"]
