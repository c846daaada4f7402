"""Gemini's native wire format (`generateContent` / `streamGenerateContent?alt=sse`).

encode: the internal Request (OpenAI Chat Completions shape) -> a GenerateContentRequest.
decode: GenerateContentResponse bodies, SSE chunks and `{"error": {...}}` bodies.
"""

from turnout.dialects.gemini.upstream import UPSTREAM, GeminiStreamDecoder, GeminiUpstream

__all__ = ["UPSTREAM", "GeminiStreamDecoder", "GeminiUpstream"]
