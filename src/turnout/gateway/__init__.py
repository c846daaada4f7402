"""The gateway core: the runtime snapshot, the services, and `Gateway.handle`, the one call
every ingress (and `turnout check`) goes through."""

from turnout.gateway.admission import Refused
from turnout.gateway.answer import Answer
from turnout.gateway.core import Gateway
from turnout.gateway.exchange import CLIENT_CLOSED, Client, Exchange
from turnout.gateway.reload import ConfigSource
from turnout.gateway.runtime import Runtime

__all__ = [
    "CLIENT_CLOSED",
    "Answer",
    "Client",
    "ConfigSource",
    "Exchange",
    "Gateway",
    "Refused",
    "Runtime",
]
