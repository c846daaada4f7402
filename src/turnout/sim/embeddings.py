"""The simulator's `POST /v1/embeddings`, in OpenAI's shape: a deterministic unit vector per
input (the same text always gets the same vector, on any run; texts sharing words get near
vectors, so a semantic cache can be tested without a model), usage counted, and the model's failure behaviours applied as for chat (outages, error
and rate-limit rates, hangs, dropped connections; the wait before answering is its ttft)."""

from __future__ import annotations

import array
import asyncio
import base64
import hashlib
import math
import random
import re
import sys
from typing import Any

import orjson
from aiohttp import web

from turnout.sim import wire
from turnout.sim.behaviour import Fault
from turnout.sim.pacing import abort_connection, hold_until_gone, tracked
from turnout.sim.state import ModelState, SimState

DEFAULT_DIMENSIONS = 256  # when the request names none (small: tests embed many texts)
_CHARS_PER_TOKEN = 4


_WORD = re.compile(r"\w+")


def unit_vector(item: str | list[int], dimensions: int) -> list[float]:
    """The same input always gives the same vector of length 1. A text's vector is a hashed
    bag of its lower-cased words and their character trigrams, so that texts sharing most
    words (a paraphrase, another case or punctuation) are near and unrelated texts far (near
    orthogonal); token id lists, and texts without a word, get a random vector seeded by
    their hash."""
    if isinstance(item, str):
        vector = _bag(item, dimensions)
        if vector is not None:
            return vector
    key = item if isinstance(item, str) else orjson.dumps(item).decode()
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "little"))
    vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def _bag(text: str, dimensions: int) -> list[float] | None:
    """Each word (weight 1) and each trigram of it (weight 0.5) added at a hashed position
    with a hashed sign (the hashing trick), then normalised; None for a text without words."""
    vector = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        padded = f"^{word}$"
        features = [(word, 1.0)]
        features += [(padded[i : i + 3], 0.5) for i in range(len(padded) - 2)]
        for feature, weight in features:
            h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
            vector[h % dimensions] += weight if h & (1 << 63) else -weight
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        return None
    return [x / norm for x in vector]


def _tokens(item: str | list[int]) -> int:
    if isinstance(item, str):
        return max(1, len(item) // _CHARS_PER_TOKEN)
    return len(item)


def _base64(vector: list[float]) -> str:
    packed = array.array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _inputs(value: Any) -> list[str | list[int]] | None:
    """OpenAI's four input shapes as a list of items; None for anything else."""
    if isinstance(value, str) and value:
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, str) and v for v in value):
        return list(value)
    if all(type(v) is int for v in value):
        return [value]
    if all(isinstance(v, list) and v and all(type(t) is int for t in v) for v in value):
        return list(value)
    return None


def _bad(status: int, message: str, model: ModelState | None, param: str | None = None):
    if model is not None:
        model.statuses[str(status)] += 1
    headers = {**wire.JSON_HEADERS, **(model.headers if model else {})}
    return web.Response(
        status=status, body=wire.error_body(status, message, param=param), headers=headers
    )


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await tracked(request, _embeddings)


async def _embeddings(request: web.Request, state: SimState) -> web.StreamResponse:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _bad(400, "We could not parse the JSON body of your request.", None)
    if not isinstance(body, dict):
        return _bad(400, "The request body must be a JSON object.", None)
    name = body.get("model")
    if not isinstance(name, str) or not name:
        return _bad(400, "You must provide a model parameter.", None, "model")
    model = state.models.get(name)
    if model is None:
        state.unknown[name] += 1
        return web.Response(
            status=404,
            body=wire.error_body(
                404,
                f"The model `{name}` does not exist or you do not have access to it.",
                code="model_not_found",
            ),
            headers=wire.JSON_HEADERS,
        )
    model.requests += 1
    items = _inputs(body.get("input"))
    if items is None:
        return _bad(400, "'input' must be a non-empty string or list (simulated).", model, "input")
    dimensions = body.get("dimensions", DEFAULT_DIMENSIONS)
    if type(dimensions) is not int or dimensions < 1:
        return _bad(400, "'dimensions' must be a positive integer.", model, "dimensions")
    failed = await _fault(request, state, model)
    if failed is not None:
        return failed
    encode = _base64 if body.get("encoding_format") == "base64" else None
    data = []
    for i, item in enumerate(items):
        vector = unit_vector(item, dimensions)
        data.append(
            {"object": "embedding", "index": i, "embedding": encode(vector) if encode else vector}
        )
    tokens = sum(_tokens(item) for item in items)
    answer = {
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    model.statuses["200"] += 1
    return web.Response(body=orjson.dumps(answer), headers={**wire.JSON_HEADERS, **model.headers})


async def _fault(
    request: web.Request, state: SimState, model: ModelState
) -> web.StreamResponse | None:
    """The model's failure for this request, as chat's endpoint would fail it; None to answer
    (after the model's ttft)."""
    outage = state.outage_status(model)
    if outage is not None:
        model.faults["outage"] += 1
        return _failed(model, outage)
    draw = model.draw(False)  # (the same two draws per request as chat: sequences align)
    if draw.fault is Fault.RATE_LIMIT or draw.fault is Fault.ERROR:
        model.faults[draw.fault.value] += 1
        return _failed(model, draw.status)
    if draw.fault is Fault.HANG:
        model.faults["hang"] += 1
        await hold_until_gone(request)
        return web.Response()  # nobody is listening; aiohttp drops it
    if draw.ttft > 0:
        await asyncio.sleep(draw.ttft)
    if draw.fault is Fault.DISCONNECT:
        model.faults["disconnect"] += 1
        abort_connection(request)
        return web.Response()
    return None


def _failed(model: ModelState, status: int) -> web.Response:
    model.statuses[str(status)] += 1
    headers = model.rate_limit_headers() if status == 429 else model.headers
    return web.Response(
        status=status, body=wire.error_body(status), headers={**wire.JSON_HEADERS, **headers}
    )
