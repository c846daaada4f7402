"""The HTTP surface: ingress endpoints, health, models."""

from turnout.server.app import GatewayServer, ListenError

__all__ = ["GatewayServer", "ListenError"]
