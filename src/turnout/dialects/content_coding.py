"""HTTP content codings (gzip, deflate) undone, with a bound on what they inflate to. Used for
a client's request body (server/body.py) and an upstream's whole answer
(providers/keepalive.py): a few kilobytes of gzip can inflate to gigabytes."""

from __future__ import annotations

import zlib

# zlib window bits: gzip framing only, zlib framing (what HTTP calls deflate) or raw deflate
_GZIP, _ZLIB, _RAW = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS
CODINGS = {"gzip": _GZIP, "x-gzip": _GZIP, "deflate": _ZLIB}


class CodingError(ValueError):
    """The data cannot be decoded: corrupt, or truncated."""


class InflatedTooLarge(ValueError):
    """The data decodes to more than the bound."""


def codings_of(header: str | None) -> list[str]:
    """A Content-Encoding header's codings, in the order applied, identity left out (known
    ones or not: the caller decides what an unknown one means)."""
    if not header:
        return []  # the usual body: plain
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    return [c for c in codings if c != "identity"]


def inflate(data: bytes, coding: str, max_size: int) -> bytes:
    """One coding of CODINGS undone; more than `max_size` bytes out is InflatedTooLarge."""
    wbits = CODINGS[coding]
    try:
        try:
            inflater = zlib.decompressobj(wbits)
            out = inflater.decompress(data, max_size + 1)
        except zlib.error:
            if wbits != _ZLIB:
                raise
            # many senders put raw deflate under "deflate" (as browsers learnt to accept)
            inflater = zlib.decompressobj(_RAW)
            out = inflater.decompress(data, max_size + 1)
    except zlib.error as exc:
        raise CodingError(f"{coding}: {exc}") from None
    if len(out) > max_size:
        raise InflatedTooLarge(f"more than {max_size} bytes once decoded")
    if not inflater.eof:
        raise CodingError(f"{coding}: the compressed data is truncated")
    return out


def decoded(body: bytes, codings: list[str], max_size: int) -> bytes:
    """`body` with every coding undone (each one of CODINGS), the last applied first."""
    for coding in reversed(codings):
        body = inflate(body, coding, max_size)
    return body
