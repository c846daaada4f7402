"""Transports to upstream models (pooled HTTP, the in-process local model, the simulator) and
the provider kinds built on them: one module per kind, registered by name (registry.py)."""

# Importing the layer registers every built-in kind, so that no config is validated, nor
# provider built, without them. A kind outside this package registers itself the same way
# when its module is imported (`TURNOUT_PLUGINS`, cli/common.py).
from turnout.providers import anthropic, cloudflare, gemini, local, openai, sim

__all__ = ["anthropic", "cloudflare", "gemini", "local", "openai", "sim"]
