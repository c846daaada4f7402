"""The HTTP surface: ingress endpoints, health, models."""

from turnout.server.app import GatewayServer

__all__ = ["GatewayServer"]
