"""GeminiUpstream: the Gemini API's native endpoints, driven by HTTPProvider."""

from __future__ import annotations

from turnout.dialects.gemini.decode import GeminiStreamDecoder, decode_response
from turnout.dialects.gemini.encode import encode_request
from turnout.dialects.gemini.errors import decode_error


class GeminiUpstream:
    """`POST {base}/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse`."""

    default_base_url = "https://generativelanguage.googleapis.com/v1beta"

    @staticmethod
    def url(base_url: str, upstream_model: str, stream: bool) -> str:
        model = upstream_model.removeprefix("models/")
        if stream:
            return f"{base_url}/models/{model}:streamGenerateContent?alt=sse"
        return f"{base_url}/models/{model}:generateContent"

    @staticmethod
    def auth_headers(api_key: str | None) -> dict[str, str]:
        return {"x-goog-api-key": api_key} if api_key else {}

    encode_request = staticmethod(encode_request)
    decode_response = staticmethod(decode_response)
    decode_error = staticmethod(decode_error)

    @staticmethod
    def stream_decoder() -> GeminiStreamDecoder:
        return GeminiStreamDecoder()


UPSTREAM = GeminiUpstream()
