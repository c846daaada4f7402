"""The Anthropic Messages wire format: ingress (clients speaking `POST /v1/messages` to us)
and upstream (what api.anthropic.com accepts and returns).

- convert.py: messages, tools and tool_choice between Anthropic's shape and the internal
  OpenAI shape, and AnthropicRequest, which carries what that shape cannot hold
- upstream.py: AnthropicUpstream, an UpstreamDialect
- ingress.py: INGRESS, an IngressDialect, and AnthropicStreamEncoder
"""

from turnout.dialects.anthropic.convert import AnthropicRequest, Native
from turnout.dialects.anthropic.ingress import INGRESS, AnthropicIngress, AnthropicStreamEncoder
from turnout.dialects.anthropic.upstream import AnthropicStreamDecoder, AnthropicUpstream

__all__ = [
    "INGRESS",
    "AnthropicIngress",
    "AnthropicRequest",
    "AnthropicStreamDecoder",
    "AnthropicStreamEncoder",
    "AnthropicUpstream",
    "Native",
]
