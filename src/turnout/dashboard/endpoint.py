"""GET /dashboard (the page), /dashboard/dashboard.js (its script), /dashboard/data (its JSON).

Who may see what: the page and its script are the same static files for everyone and hold
no data, so they are served without a key (a browser cannot send a bearer header on a plain
page load anyway). The data needs an admin key when auth is on, like /health/providers: the
page asks for the key once, keeps it in the tab's sessionStorage (gone when the tab closes,
never in a URL, a cookie or the server's logs) and sends it as `Authorization: Bearer` on
each data call. The page renders with textContent only and a strict Content-Security-Policy
(scripts from this origin only, no inline script), so nothing shown can run as script."""

from __future__ import annotations

from importlib.resources import files

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from turnout import clock
from turnout.accounting.auth import AuthError
from turnout.dashboard.aggregator import Aggregator
from turnout.dashboard.view import dashboard_data
from turnout.dialects.openai.ingress import encode_error
from turnout.gateway import Gateway

_STATIC = files("turnout.dashboard") / "static"
_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class DashboardEndpoints:
    """Subscribes the aggregator to the gateway's bus (queued: the page is never worth a
    request's time) and answers the dashboard's three paths."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.aggregator = Aggregator(lambda: gateway.config)
        gateway.bus.subscribe(
            self.aggregator.on_event, kinds=Aggregator.KINDS, max_queue=10_000, name="dashboard"
        )
        self._page = (_STATIC / "page.html").read_bytes()
        self._script = (_STATIC / "dashboard.js").read_bytes()

    def routes(self) -> list[tuple[str, Handler]]:
        """(path, handler) of the GETs."""
        return [
            ("/dashboard", self.page),
            ("/dashboard/dashboard.js", self.script),
            ("/dashboard/data", self.data),
        ]

    async def page(self, _: web.Request) -> web.Response:
        return _static(self._page, "text/html")

    async def script(self, _: web.Request) -> web.Response:
        return _static(self._script, "text/javascript")

    async def data(self, http: web.Request) -> web.Response:
        refused = await self._refused(http)
        if refused is not None:
            return refused
        body = orjson.dumps(dashboard_data(self.gateway, self.aggregator, clock.now()))
        return web.Response(
            body=body,
            content_type="application/json",
            headers={"Cache-Control": "no-store", **_HEADERS},
        )

    async def _refused(self, http: web.Request) -> web.Response | None:
        """The admin endpoints' rule (server/admin.py): with auth on, an admin key. A
        refusal is in OpenAI's error shape."""
        try:
            await self.gateway.operator(http.headers, http.remote, "The dashboard")
        except AuthError as exc:
            refused = _error(exc.status, exc.message, exc.error_type, exc.code)
            refused.headers.update(exc.headers)  # Retry-After of a blocked address
            return refused
        return None


def _static(body: bytes, content_type: str) -> web.Response:
    return web.Response(
        body=body,
        content_type=content_type,
        charset="utf-8",
        headers={"Cache-Control": "no-cache", **_HEADERS},
    )


def _error(status: int, message: str, error_type: str | None, code: str | None = None):
    body = encode_error(status, message, error_type=error_type, code=code)
    return web.Response(status=status, body=body, content_type="application/json", headers=_HEADERS)
