"""Metric names, buckets and label values: where the series a scrape can show are bounded.

The gen_ai_* metrics follow the OpenTelemetry GenAI semantic conventions, translated to
Prometheus names the way OTel's Prometheus exporters do (dots become underscores, the unit
`s` becomes the suffix `_seconds`, an annotation unit like `{token}` adds none), with the
conventions' advised bucket boundaries. Everything else is turnout_*.

Label values come only from the gateway's own names (its configured routes, models and
providers, its outcome and reason vocabularies), never from what a client sent: a route name
the config does not know is `unknown`, an attempt's reason is its class (`server_error`, not
`server_error(502)`), so no client can make a scrape grow. No key ids, sessions or request ids.
"""

from __future__ import annotations

from turnout.model.errors import ErrorClass

# gen_ai.client.token.usage, unit {token}
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
# gen_ai.client.operation.duration, unit s
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
# gen_ai.server.time_to_first_token, unit s
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip

OPERATION = "chat"  # gen_ai.operation.name: both client APIs are chat completions
UNKNOWN = "unknown"  # a route (or forced model) the config does not name
NONE = "none"  # no model answered (every target failed, or the request was refused)

# each request metric's help text: one wording, whichever way it is recorded (recorder.py's
# prometheus_client metrics with workers, tallies.py's families in one process)
HELP = {
    "tokens": "Number of input and output tokens used (billable tokens, as priced).",
    "duration": "GenAI operation duration: a client request from its arrival to its end,"
    " failovers included.",
    "ttft": "Time to the first token of a streamed answer, from the request's arrival (failed"
    " attempts before it included).",
    "requests": "Client requests by route, answering model and outcome.",
    "fallbacks": "Targets passed over (failed or skipped) before the answering one: from_model"
    " was not used, to_model answered (`none`: nothing did).",
    "cost": "What the answers cost, in USD, at the configured prices.",
    "savings": "Baseline cost less actual cost, in USD, summed since the gateway started"
    " (negative when dearer models answered).",
}

GEN_AI_LABELS = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
)

# why a target did not answer, as its class: the scheduler's and the selector's skip reasons,
# and every error class (model.errors.ErrorClass); anything else is `other`
_REASONS = frozenset(
    {
        *(c.value for c in ErrorClass),
        "open",
        "rate_limited",
        "quota",
        "misconfigured",
        "capability",
        "context_length",
        "max_tokens",
        "excluded",
    }
)


def reason_class(reason: object) -> str:
    """`server_error(502)` -> `server_error`; a reason outside the vocabulary -> `other`."""
    text = reason if isinstance(reason, str) else ""
    head = text.split("(", 1)[0]
    return head if head in _REASONS else "other"
