"""Health: per-model state derived only from attempt outcomes, optionally shared."""

from turnout.health.engine import HealthEngine, ModelHealth

__all__ = ["HealthEngine", "ModelHealth"]
