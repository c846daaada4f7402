"""Provider kind `openai`: any OpenAI-compatible API (OpenRouter, Groq, Cerebras, vLLM, Ollama,
llama.cpp's server, Cloudflare's /ai/v1, Gemini's OpenAI endpoint) over pooled HTTP."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from turnout.config.schema import ProviderConfig
from turnout.providers.http import HTTPProvider
from turnout.providers.registry import register


class OpenAIConfig(ProviderConfig):
    kind: Literal["openai"] = "openai"
    embeddings: ClassVar[bool] = True  # POST {base_url}/embeddings

    @model_validator(mode="after")
    def _needs_base_url(self) -> OpenAIConfig:
        # there is no one OpenAI-compatible host: the config must say which
        if not self.base_url:
            raise ValueError("base_url is required for kind 'openai'")
        return self


def make(name: str, config: OpenAIConfig) -> HTTPProvider:
    return HTTPProvider(name, config)


register("openai", OpenAIConfig, make)
