"""Provider kind `gemini`: Gemini's native generateContent API over pooled HTTP."""

from __future__ import annotations

from typing import Literal

from turnout.config.schema import ProviderConfig
from turnout.dialects.gemini.upstream import GeminiUpstream
from turnout.providers.http import HTTPProvider
from turnout.providers.registry import register


class GeminiConfig(ProviderConfig):
    kind: Literal["gemini"] = "gemini"


def make(name: str, config: GeminiConfig) -> HTTPProvider:
    return HTTPProvider(name, config, GeminiUpstream())


register("gemini", GeminiConfig, make)
