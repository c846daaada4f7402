"""The `metrics:` config section: whether the gateway keeps Prometheus metrics and serves
them at GET /metrics, and who may read them.

schema.py imports this module for its `metrics:` field, so this one imports nothing of
schema's (an import cycle); it restates the one setting it needs (extra keys are errors).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class MetricsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # off: no subscriber on the event bus and no /metrics (read when the server starts)
    enabled: bool = True
    # with authentication on, /metrics needs an admin key like the other admin endpoints;
    # `public: true` lets anyone who can reach the port scrape it (a Prometheus without a
    # key, behind a private network). The figures hold no key ids, sessions or prompts.
    public: bool = False
