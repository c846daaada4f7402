"""Provider kinds -> provider classes. Adding a provider is a row here plus a dialect."""

from __future__ import annotations

from collections.abc import AsyncIterator

from turnout.config.schema import ProviderConfig
from turnout.model import Delta, Request, Response
from turnout.providers.base import Call, Provider


class UnsupportedProvider(Provider):
    """A configured kind this build cannot speak yet: its models are skipped, never tried."""

    def unavailable_reason(self) -> str | None:
        return f"provider kind {self.config.kind!r} is not supported by this version"

    async def complete(self, request: Request, call: Call) -> Response:
        raise NotImplementedError(self.unavailable_reason())

    def stream(self, request: Request, call: Call) -> AsyncIterator[Delta]:
        raise NotImplementedError(self.unavailable_reason())


def make_provider(name: str, config: ProviderConfig) -> Provider:
    if config.kind == "openai":
        from turnout.providers.http import HTTPProvider

        return HTTPProvider(name, config)
    if config.kind == "anthropic":
        from turnout.dialects.anthropic.upstream import AnthropicUpstream
        from turnout.providers.http import HTTPProvider

        version = config.api_version or "2023-06-01"
        return HTTPProvider(name, config, AnthropicUpstream(config.max_tokens, version))
    if config.kind == "gemini":
        from turnout.dialects.gemini.upstream import GeminiUpstream
        from turnout.providers.http import HTTPProvider

        return HTTPProvider(name, config, GeminiUpstream())
    if config.kind == "cloudflare":
        from turnout.dialects.cloudflare import CloudflareUpstream
        from turnout.providers.http import HTTPProvider

        return HTTPProvider(
            name, config, CloudflareUpstream(config.account_id, max_tokens=config.max_tokens)
        )
    if config.kind == "local":
        from turnout.providers.local import LocalProvider

        return LocalProvider(name, config)
    if config.kind == "sim":
        from turnout.providers.sim import SimProvider

        return SimProvider(name, config)
    return UnsupportedProvider(name, config)
