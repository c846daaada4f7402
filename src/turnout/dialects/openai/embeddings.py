"""OpenAI's embeddings wire format (`POST /v1/embeddings`), both sides: a client's request
decoded, our answer encoded, and the body we send an OpenAI-compatible upstream and how we
read its answer. Pure functions; errors use the chat dialect's shapes (ingress.encode_error,
upstream.decode_error), as OpenAI's own API does.

Vectors travel as JSON floats between turnout and its upstreams (every OpenAI-compatible
host speaks that; not all speak base64), and go back to the client in the format it asked
for: the openai SDKs ask for base64 by default and decode little-endian float32.
"""

from __future__ import annotations

import array
import base64
import sys
from typing import Any

import orjson

from turnout.dialects.errors import InvalidRequest, json_object
from turnout.dialects.untrusted import count, items, mapping
from turnout.model import ErrorClass, UpstreamError, Usage
from turnout.model.embeddings import EmbeddingRequest, EmbeddingResult, EncodingFormat

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request
_KNOWN = {"model", "input", "encoding_format", "dimensions", "user"}

# --- the client's side ---------------------------------------------------------------------


def _token_ids(value: Any) -> list[int] | None:
    """`value` as a list of token ids, or None when it is not one."""
    if not isinstance(value, list):
        return None
    if all(type(token) is int and token >= 0 for token in value):
        return value
    return None


def _inputs(value: Any) -> list[str] | list[list[int]]:
    """`input`: a string, a list of strings, a list of token ids, or a list of such lists."""
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("'input' cannot be an empty string", "input")
        return [value]
    if not isinstance(value, list):
        raise InvalidRequest(
            "'input' must be a string, a list of strings, a list of token ids or a list of"
            " lists of token ids",
            "input",
        )
    if not value:
        raise InvalidRequest("'input' cannot be an empty list", "input")
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(
            f"'input' has {len(value)} items: at most {MAX_INPUTS} per request", "input"
        )
    if all(isinstance(item, str) for item in value):
        for i, item in enumerate(value):
            if not item:
                raise InvalidRequest(f"'input[{i}]' cannot be an empty string", "input")
        return value
    if all(type(item) is int for item in value):
        tokens = _token_ids(value)
        if tokens is None:
            raise InvalidRequest("'input' token ids must be non-negative integers", "input")
        return [tokens]
    lists: list[list[int]] = []
    for i, item in enumerate(value):
        tokens = _token_ids(item)
        if not tokens:
            raise InvalidRequest(
                f"'input[{i}]' must be a non-empty list of token ids (non-negative integers),"
                " like the other items: strings and token lists cannot be mixed",
                "input",
            )
        lists.append(tokens)
    return lists


def decode_request(raw: bytes) -> EmbeddingRequest:
    """A client's /v1/embeddings body -> EmbeddingRequest. Raises InvalidRequest."""
    body = json_object(
        raw, "the request body is not valid JSON", "the request body must be a JSON object"
    )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is a required property: name a route or a model", "model")
    if "input" not in body:
        raise InvalidRequest("'input' is a required property", "input")
    # OpenAI's default is float (the SDKs send base64 explicitly)
    encoding_format: EncodingFormat = "float"
    if body.get("encoding_format") == "base64":
        encoding_format = "base64"
    elif body.get("encoding_format") not in (None, "float"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions < 1):
        raise InvalidRequest("'dimensions' must be a positive integer", "dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string", "user")
    return EmbeddingRequest(
        model=model,
        inputs=_inputs(body["input"]),
        encoding_format=encoding_format,
        dimensions=dimensions,
        user=user,
        extra={k: v for k, v in body.items() if k not in _KNOWN},
    )


def _base64(vector: list[float]) -> str:
    """The vector as base64 of little-endian float32, as OpenAI sends it."""
    packed = array.array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def encode_response(result: EmbeddingResult, model: str, encoding_format: EncodingFormat) -> bytes:
    """Our answer in OpenAI's shape: a list of embeddings, the model, the usage."""
    encode = _base64 if encoding_format == "base64" else None
    data = [
        {"object": "embedding", "index": i, "embedding": encode(v) if encode else v}
        for i, v in enumerate(result.vectors)
    ]
    tokens = result.usage.prompt_tokens if result.usage is not None else 0
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


# --- the upstream's side -------------------------------------------------------------------


def url(base_url: str) -> str:
    return base_url + "/embeddings"


def encode_request(request: EmbeddingRequest, upstream_model: str) -> dict[str, Any]:
    """The body for an OpenAI-compatible upstream: always float vectors (see the module)."""
    body: dict[str, Any] = {
        **request.extra,
        "model": upstream_model,
        "input": request.inputs,
        "encoding_format": "float",
    }
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if request.user is not None:
        body["user"] = request.user
    return body


def _invalid(message: str) -> UpstreamError:
    return UpstreamError(ErrorClass.INVALID_OUTPUT, message, status=200)


def _vector(raw: Any, index: int) -> list[float]:
    """One embedding: a list of numbers (or base64 float32, which some hosts always send)."""
    if isinstance(raw, str):
        try:
            packed = array.array("f", base64.b64decode(raw, validate=True))
        except ValueError:  # binascii.Error, or a length that is not whole floats
            raise _invalid(f"embedding {index} is not valid base64 float32") from None
        if sys.byteorder != "little":
            packed.byteswap()
        return packed.tolist()
    if not isinstance(raw, list) or not raw:
        raise _invalid(f"embedding {index} is not a list of numbers")
    try:
        array.array("d", raw)  # checks every item is a number, at C speed
    except TypeError:
        raise _invalid(f"embedding {index} holds something other than numbers") from None
    return raw


def _usage(raw: Any) -> Usage | None:
    usage = mapping(raw)
    if not usage:
        return None
    tokens = count(usage.get("prompt_tokens")) or count(usage.get("total_tokens"))
    return Usage(prompt_tokens=tokens)


def decode_response(body: bytes, expected: int) -> EmbeddingResult:
    """A 200 answer -> one vector per input, in input order. A body of the wrong shape, or
    with a vector missing, is the upstream's failure (invalid_output): another may answer."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _invalid("upstream returned a body that is not JSON") from None
    answer = mapping(parsed)
    if "error" in answer:
        raise _invalid(f"upstream answered 200 with an error: {str(answer['error'])[:200]}")
    vectors: list[list[float] | None] = [None] * expected
    for position, item in enumerate(items(answer.get("data"))):
        entry = mapping(item)
        index = entry.get("index", position)
        if type(index) is not int or not 0 <= index < expected or vectors[index] is not None:
            raise _invalid(f"upstream answered an embedding with index {index!r}")
        vectors[index] = _vector(entry.get("embedding"), index)
    missing = [i for i, v in enumerate(vectors) if v is None]
    if missing:
        raise _invalid(f"upstream answered {expected - len(missing)} of {expected} embeddings")
    return EmbeddingResult([v for v in vectors if v is not None], _usage(answer.get("usage")))
