"""The internal request/response types every dialect decodes into and encodes from."""

from turnout.model.errors import ErrorClass, UpstreamError
from turnout.model.types import (
    Attempt,
    Delta,
    Outcome,
    Request,
    Response,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "Attempt",
    "Delta",
    "ErrorClass",
    "Outcome",
    "Request",
    "Response",
    "ToolCall",
    "ToolCallDelta",
    "UpstreamError",
    "Usage",
]
