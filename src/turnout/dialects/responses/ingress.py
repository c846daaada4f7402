"""The Responses API as clients speak it: the IngressDialect the chat handler runs."""

from __future__ import annotations

import time

import orjson

from turnout.dialects.openai_errors import encode_error
from turnout.dialects.responses import encode
from turnout.dialects.responses.decode import decode_request
from turnout.dialects.responses.stream import ResponsesStreamEncoder
from turnout.model import Request, Response


class ResponsesIngress:
    """`POST /v1/responses`, translated to and from the internal chat-shaped Request."""

    name = "responses"
    decode_request = staticmethod(decode_request)
    encode_error = staticmethod(encode_error)  # OpenAI's error body, as on chat completions

    @staticmethod
    def encode_response(response: Response, model: str) -> bytes:
        return orjson.dumps(encode.response_object(response, model))

    @staticmethod
    def stream_encoder(request: Request, model: str) -> ResponsesStreamEncoder:
        return ResponsesStreamEncoder(model, encode.new_id("resp"), time.time())


INGRESS = ResponsesIngress()
