"""The one place a refusal becomes a response: any GatewayError in the error shape of the API
the client was calling, from a chat handler or from outside any (no such path, a malformed or
unreadable request, an unexpected failure)."""

from __future__ import annotations

from aiohttp import web

from turnout.dialects.anthropic.ingress import INGRESS as ANTHROPIC
from turnout.dialects.base import IngressDialect
from turnout.dialects.openai.ingress import INGRESS as OPENAI
from turnout.model.errors import GatewayError

ANTHROPIC_PATH = "/v1/messages"


def render_error(error: GatewayError, dialect: IngressDialect) -> web.Response:
    """The refusal in `dialect`'s error shape, with its status and headers."""
    body = dialect.encode_error(
        error.status,
        error.message,
        code=error.code,
        param=error.param,
        error_type=error.error_type,
    )
    return web.Response(
        status=error.status, body=body, content_type="application/json", headers=error.headers
    )


def dialect_for(path: str) -> IngressDialect:
    """Anthropic's shape for /v1/messages (and what lies under it), OpenAI's elsewhere."""
    return ANTHROPIC if path.startswith(ANTHROPIC_PATH) else OPENAI


def error_response(
    status: int, message: str, *, path: str = "", error_type: str | None = None
) -> web.Response:
    """An error raised outside any chat handler, in the shape `path` implies."""
    return render_error(GatewayError(status, message, error_type=error_type), dialect_for(path))
