"""Provider kind `anthropic`: the Anthropic Messages API over pooled HTTP."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from turnout.config.schema import ProviderConfig
from turnout.dialects.anthropic.upstream import AnthropicUpstream
from turnout.providers.http import HTTPProvider
from turnout.providers.registry import register


class AnthropicConfig(ProviderConfig):
    kind: Literal["anthropic"] = "anthropic"
    # max_tokens is required there; this is sent when the client names none
    max_tokens: int = Field(4096, gt=0)
    api_version: str | None = None  # anthropic-version header (default 2023-06-01)


def make(name: str, config: AnthropicConfig) -> HTTPProvider:
    version = config.api_version or "2023-06-01"
    return HTTPProvider(name, config, AnthropicUpstream(config.max_tokens, version))


register("anthropic", AnthropicConfig, make)
