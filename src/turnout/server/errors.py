"""An error answered outside any chat handler (no such path, a malformed or unreadable
request, an unexpected failure) in the error shape of the API the client was calling."""

from __future__ import annotations

from aiohttp import web

from turnout.dialects.anthropic.ingress import INGRESS as ANTHROPIC
from turnout.dialects.openai.ingress import INGRESS as OPENAI

ANTHROPIC_PATH = "/v1/messages"


def error_response(
    status: int, message: str, *, path: str = "", error_type: str | None = None
) -> web.Response:
    """Anthropic's shape for /v1/messages (and what lies under it), OpenAI's elsewhere."""
    dialect = ANTHROPIC if path.startswith(ANTHROPIC_PATH) else OPENAI
    body = dialect.encode_error(status, message, error_type=error_type)
    return web.Response(status=status, body=body, content_type="application/json")
