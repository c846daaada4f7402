"""Config: a typed schema, YAML loading with ${ENV} references, embedded defaults."""

from turnout.config.load import ConfigError, load_config, parse_config
from turnout.config.schema import Config, ModelConfig, ProviderConfig, RouteConfig, Timeouts

__all__ = [
    "Config",
    "ConfigError",
    "ModelConfig",
    "ProviderConfig",
    "RouteConfig",
    "Timeouts",
    "load_config",
    "parse_config",
]
