"""Prices in USD per 1M tokens: the shipped default table, overridden by config.

The table covers common models by their upstream names, as each provider published them
on its pricing page (checked 2025-11; sources below). Prices change: set `price:` on a
model in config to override, and check `turnout check`'s cost column after an upgrade.
"""

from __future__ import annotations

import logging

from turnout.config.schema import ModelConfig, Price

log = logging.getLogger("turnout.accounting")

TABLE_DATE = "2025-11-01"
SOURCES = {
    "openai": "https://openai.com/api/pricing/",
    "anthropic": "https://www.anthropic.com/pricing#api",
    "google": "https://ai.google.dev/gemini-api/docs/pricing",
    "openrouter": "https://openrouter.ai/models (per-model pages)",
    "groq": "https://groq.com/pricing",
    "cerebras": "https://www.cerebras.ai/pricing",
    "deepseek": "https://api-docs.deepseek.com/quick_start/pricing",
    "mistral": "https://mistral.ai/pricing#api-pricing",
    "cloudflare": "https://developers.cloudflare.com/workers-ai/platform/pricing/",
}


def _p(inp: float, out: float, cached: float | None = None) -> Price:
    return Price(input=inp, output=out, cached_input=cached)


# upstream model name -> price (USD per 1M tokens)
DEFAULT_PRICES: dict[str, Price] = {
    # OpenAI
    "gpt-4o": _p(2.50, 10.00, 1.25),
    "gpt-4o-mini": _p(0.15, 0.60, 0.075),
    "gpt-4.1": _p(2.00, 8.00, 0.50),
    "gpt-4.1-mini": _p(0.40, 1.60, 0.10),
    "gpt-4.1-nano": _p(0.10, 0.40, 0.025),
    "o3-mini": _p(1.10, 4.40, 0.55),
    "o4-mini": _p(1.10, 4.40, 0.275),
    "gpt-5": _p(1.25, 10.00, 0.125),
    "gpt-5-mini": _p(0.25, 2.00, 0.025),
    "gpt-5-nano": _p(0.05, 0.40, 0.005),
    # OpenAI embeddings (input tokens only)
    "text-embedding-3-small": _p(0.02, 0.0),
    "text-embedding-3-large": _p(0.13, 0.0),
    "text-embedding-ada-002": _p(0.10, 0.0),
    # Anthropic (cached = cache reads)
    "claude-haiku-4-5": _p(1.00, 5.00, 0.10),
    "claude-sonnet-4-5": _p(3.00, 15.00, 0.30),
    "claude-opus-4-1": _p(15.00, 75.00, 1.50),
    "claude-3-5-haiku-latest": _p(0.80, 4.00, 0.08),
    # Google
    "gemini-2.5-pro": _p(1.25, 10.00, 0.31),
    "gemini-2.5-flash": _p(0.30, 2.50, 0.075),
    "gemini-2.5-flash-lite": _p(0.10, 0.40, 0.025),
    "gemini-2.0-flash": _p(0.10, 0.40, 0.025),
    # OpenRouter (Meta Llama 4)
    "meta-llama/llama-4-scout": _p(0.08, 0.30),
    "meta-llama/llama-4-maverick": _p(0.15, 0.60),
    # Groq
    "llama-3.1-8b-instant": _p(0.05, 0.08),
    "llama-3.3-70b-versatile": _p(0.59, 0.79),
    # Cerebras
    "llama3.1-8b": _p(0.10, 0.10),
    "llama-3.3-70b": _p(0.85, 1.20),
    # DeepSeek
    "deepseek-chat": _p(0.27, 1.10, 0.07),
    # Mistral
    "mistral-small-latest": _p(0.10, 0.30),
    "mistral-large-latest": _p(2.00, 6.00),
    # Cloudflare Workers AI
    "@cf/meta/llama-3.1-8b-instruct": _p(0.28, 0.83),
    "@cf/meta/llama-3.3-70b-instruct-fp8-fast": _p(0.29, 2.25),
}

FREE = Price(input=0, output=0)


def price_of(name: str, model: ModelConfig) -> Price:
    """Config's price when set, else the table's for the upstream name, else free (warned)."""
    if model.price is not None:
        return model.price
    upstream = model.model or name
    if upstream in DEFAULT_PRICES:
        return DEFAULT_PRICES[upstream]
    # OpenRouter-style "vendor/model" names often match a bare table entry
    bare = upstream.rsplit("/", 1)[-1]
    if bare in DEFAULT_PRICES:
        return DEFAULT_PRICES[bare]
    log.warning("no price known for model %s (%s): its cost counts as 0", name, upstream)
    return FREE
