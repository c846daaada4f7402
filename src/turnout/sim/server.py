"""Running the sim: in-process on an ephemeral port (tests, the sim provider), or blocking
for `turnout sim`."""

from __future__ import annotations

import socket
from typing import Self

from aiohttp import web

from turnout.sim.app import make_sim_app
from turnout.sim.schema import SimBehaviour
from turnout.sim.state import STATE, SimState

# handlers are cancelled on shutdown, so this only bounds a misbehaving one
_SHUTDOWN_TIMEOUT = 1.0


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


class SimServer:
    """The sim app served on host:port (port 0: any free port) inside the running loop.

    `async with SimServer(behaviours) as sim:` then point a client at `sim.url`.
    """

    def __init__(
        self,
        behaviours: dict[str, SimBehaviour],
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.app = make_sim_app(behaviours, seed)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def state(self) -> SimState:
        return self.app[STATE]

    @property
    def url(self) -> str:
        """The OpenAI base URL, ending in /v1."""
        return _url(self.host, self.port)

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]  # the port actually bound

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _listen(host: str, port: int) -> socket.socket:
    # bind ourselves so that port 0 can be reported as the port really bound
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def run_sim(host: str, port: int, behaviours: dict[str, SimBehaviour], seed: int = 0) -> None:
    """Serve the sim until interrupted (Ctrl-C / SIGTERM). Raises OSError if it cannot bind."""
    sock = _listen(host, port)
    url = _url(host, sock.getsockname()[1])
    web.run_app(
        make_sim_app(behaviours, seed),
        sock=sock,
        access_log=None,
        shutdown_timeout=_SHUTDOWN_TIMEOUT,
        print=lambda _message: print(f"turnout sim listening on {url}", flush=True),
    )
