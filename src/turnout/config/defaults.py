"""The embedded default config: `turnout serve` with no file.

Route `chat` lists the cloud models whose keys are set in the environment, cheapest first,
then the in-process SmolLM2-135M last, so a new user gets real answers with no key at all.
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
]


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
    data = {
        "server": {"host": host, "port": port},
        "providers": providers,
        "models": models,
        "routes": {"chat": {"targets": list(models)}},
    }
    return parse_config(data, "<embedded defaults>")
