"""The `traces:` config section: OpenTelemetry spans of each request and its attempts,
exported over OTLP (HTTP/protobuf). Off by default; the SDK and the exporter are the optional
extra `turnout[traces]`, so turning traces on without them is a config error that says so.

schema.py imports this module for its `traces:` field, so this one imports nothing of
schema's (an import cycle); it restates the one setting it needs (extra keys are errors).
"""

from __future__ import annotations

import importlib.util
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# the modules turnout.traces imports when traces are on (found, not imported, here)
_NEEDED = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")


class TracesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # read when the server starts (like `metrics:`): a reload does not turn traces on or off
    enabled: bool = False
    # an OTLP/HTTP collector: its base URL (the exporter posts to <url>/v1/traces) or the
    # full .../v1/traces URL. A plain URL: secrets belong in no span or endpoint here
    otlp_endpoint: str = "http://127.0.0.1:4318"
    service_name: str = Field("turnout", min_length=1)
    # the share of requests traced (a request's attempts go with it: the sampler is per trace)
    sample: float = Field(1.0, ge=0, le=1)

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"expected an http(s) URL such as http://collector:4318, got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _sdk_installed(self) -> TracesConfig:
        if self.enabled:
            missing = [name for name in _NEEDED if not _importable(name)]
            if missing:
                raise ValueError(
                    "traces.enabled needs the OpenTelemetry SDK and OTLP exporter: "
                    'pip install "turnout[traces]" (missing: ' + ", ".join(missing) + ")"
                )
        return self

    @property
    def traces_url(self) -> str:
        """Where spans are posted: the OTLP/HTTP traces path under the configured endpoint."""
        url = self.otlp_endpoint.rstrip("/")
        return url if url.endswith("/v1/traces") else url + "/v1/traces"


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
