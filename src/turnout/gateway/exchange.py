"""One client request's passage through the gateway, from its arrival to its ledger row.

The server opens an Exchange when a request arrives (`Gateway.arrive`); from then on the
request has an id, an arrival time and the runtime snapshot it will use to the end. The
exchange publishes its RequestFinished exactly once, whatever happens: an answer (the core
finishes it), a stream (the relay's end finishes it), or a refusal (`refuse`)."""

from __future__ import annotations

import itertools
import os
import time
from typing import Protocol

from turnout import clock
from turnout.accounting.auth import Identity
from turnout.accounting.records import LedgerRow
from turnout.events import Publish, RequestFinished
from turnout.gateway.runtime import Runtime
from turnout.model.errors import GatewayError

CLIENT_CLOSED = 499  # nginx's status for a client that hung up before its answer

# request ids: a random per-process prefix and a counter, unique across workers and restarts
# without a urandom call per request
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count(1)


def next_request_id() -> str:
    return f"{_PREFIX}{next(_COUNTER):016x}"


class Client(Protocol):
    """What the core may ask of the client's connection."""

    def connected(self) -> bool:
        """False once the client has hung up."""
        ...

    def absorb_cut(self) -> bool:
        """In `except CancelledError`: True when the shutdown ended this request (the
        cancellation is then undone so that the client can still be answered)."""
        ...


class Exchange:
    __slots__ = ("_finished", "_publish", "_t0", "client", "identity", "row", "runtime")

    def __init__(self, dialect: str, runtime: Runtime, client: Client, publish: Publish) -> None:
        self.row = LedgerRow(
            id=next_request_id(),
            started_at=clock.now(),
            route="",
            dialect=dialect,
            stream=False,
            status=500,
            outcome="error",
        )
        self.runtime = runtime  # read once, here: this request uses no other config
        runtime.users.enter()  # (a reload closes what only this runtime holds after the last)
        self.client = client
        self.identity: Identity | None = None
        self._t0 = time.perf_counter()
        self._publish = publish
        self._finished = False

    @property
    def id(self) -> str:
        return self.row.id

    def identified(self, identity: Identity) -> None:
        self.identity = identity
        self.row.key_id = identity.key_id

    def refuse(self, refused: GatewayError) -> GatewayError:
        """The request ends in this refusal: recorded, and returned with the request id."""
        row = self.row
        row.status, row.error = refused.status, refused.message[:300]
        if refused.status == 503 and refused.code == "gateway_shutting_down":
            row.outcome = "shutdown"
        refused.headers["x-turnout-request-id"] = row.id
        self.finish()
        return refused

    def finish(self, client_left_first: bool | None = None) -> None:
        """Publish the row (once). A client that hung up before it was sent anything makes
        the row a 499 (`client_left_first`; None: ask the connection)."""
        if self._finished:
            return
        self._finished = True
        row = self.row
        if client_left_first is None:
            client_left_first = not self.client.connected()
        if client_left_first:
            row.status, row.outcome = CLIENT_CLOSED, "client_closed"
        row.latency_ms = (time.perf_counter() - self._t0) * 1000
        identity = self.identity
        self._publish(RequestFinished(row, identity.key if identity else None))
        self.runtime.users.leave()
