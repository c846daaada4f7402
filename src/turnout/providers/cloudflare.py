"""Provider kind `cloudflare`: Workers AI's native /accounts/{account_id}/ai/run API."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from turnout.config.schema import ProviderConfig
from turnout.dialects.cloudflare import CloudflareUpstream
from turnout.providers.http import HTTPProvider
from turnout.providers.registry import register


class CloudflareConfig(ProviderConfig):
    kind: Literal["cloudflare"] = "cloudflare"
    account_id: str | None = None  # the account in /accounts/{account_id}/ai/run/@cf/...
    max_tokens: int = Field(4096, gt=0)  # sent when the client names none

    @model_validator(mode="after")
    def _needs_account(self) -> CloudflareConfig:
        if not (self.account_id or self.base_url):
            raise ValueError("account_id (or base_url) is required for kind 'cloudflare'")
        return self


def make(name: str, config: CloudflareConfig) -> HTTPProvider:
    upstream = CloudflareUpstream(config.account_id, max_tokens=config.max_tokens)
    return HTTPProvider(name, config, upstream)


register("cloudflare", CloudflareConfig, make)
