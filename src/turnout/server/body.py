"""Reading a request body the client controls: how fast it arrives, how large it is once
inflated, and whether its content coding can be decoded at all.

aiohttp's own decompression is off (GatewayServer._listen): it passed unknown codings through
as if they were plain, raised a 500-bound error on corrupt gzip, and accepted a truncated
stream. Doing it here gives every failure the client's status and words."""

from __future__ import annotations

import asyncio

from aiohttp import web

from turnout.dialects.content_coding import (
    CODINGS,
    CodingError,
    InflatedTooLarge,
    codings_of,
    decoded,
)
from turnout.model.errors import GatewayError


class BodyError(GatewayError):
    """The body cannot be used: answered in the client's dialect with this status."""

    def __init__(self, status: int, message: str, code: str, *, close: bool = False) -> None:
        super().__init__(status, message, code=code)
        self.close = close  # the rest of the body will not be read: end the connection


def _codings(header: str | None) -> list[str]:
    """The content codings applied, in order; 415 for one this gateway cannot undo."""
    codings = codings_of(header)
    unknown = [c for c in codings if c not in CODINGS]
    if unknown:
        raise BodyError(
            415,
            f"unsupported Content-Encoding {', '.join(unknown)!s}: send the body plain,"
            " gzip or deflate",
            "unsupported_content_encoding",
        )
    return codings


async def _receive(request: web.BaseRequest, timeout: float, max_size: int) -> bytes:
    """The raw body, waiting at most `timeout` seconds for each next piece of it."""
    payload = request.content
    payload.set_read_chunk_size(max_size)  # buffer a whole body without pause/resume cycles
    body = bytearray()
    while True:
        chunk = payload.read_nowait()  # what has arrived: the common case waits for nothing
        if not chunk:
            if payload.at_eof():
                break
            try:
                async with asyncio.timeout(timeout):
                    chunk = await payload.readany()
            except TimeoutError:
                raise BodyError(
                    408,
                    f"the request body stalled: nothing arrived for {timeout:g}s",
                    "request_timeout",
                    close=True,
                ) from None
            if not chunk:
                break
        body += chunk
        if len(body) > max_size:
            raise BodyError(
                413, f"request body larger than {max_size} bytes", "request_too_large", close=True
            )
    return bytes(body)


async def read_body(request: web.BaseRequest, timeout: float) -> bytes:
    """The request body, decoded; BodyError for one that stalls (408), is too large (413),
    is corrupt (400) or uses a coding this gateway does not know (415). At most the request's
    `client_max_size` bytes, on the wire and once decoded."""
    codings = _codings(request.headers.get("content-encoding"))
    max_size = request.client_max_size
    return _decoded(await _receive(request, timeout, max_size), codings, max_size)


def read_body_now(request: web.BaseRequest) -> bytes | None:
    """`read_body` without a coroutine when all of the body has arrived (the usual small
    request: it comes with its headers); None when it has not: await `read_body`."""
    payload = request.content
    max_size = request.client_max_size
    if not payload.is_eof() or payload.total_bytes > max_size:
        return None  # (more to wait for; or too large, refused by read_body)
    codings = _codings(request.headers.get("content-encoding"))
    return _decoded(payload.read_nowait(), codings, max_size)


def _decoded(body: bytes, codings: list[str], max_size: int) -> bytes:
    """The body with its codings undone, failures in the client's status and words."""
    try:
        return decoded(body, codings, max_size)
    except InflatedTooLarge:
        raise BodyError(
            413, f"request body larger than {max_size} bytes once decoded", "request_too_large"
        ) from None
    except CodingError as exc:
        raise BodyError(
            400, f"the request body could not be decoded: {exc}", "invalid_body"
        ) from None
