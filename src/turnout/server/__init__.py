"""The HTTP surface: ingress endpoints, health, models."""

from turnout.server.app import make_app

__all__ = ["make_app"]
