"""Reading JSON an upstream sent: typed accessors for decoders.

An upstream's body is untrusted input: any key may be missing or hold any type, numbers may be
huge or negative, nesting may be deep. A decoder reads it through these helpers, so a body of
the wrong shape is either read leniently (a wrong-typed optional field counts as absent) or
raises UpstreamError, never KeyError, TypeError, ValueError or RecursionError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

from turnout.model import ErrorClass, UpstreamError

# token counts and timestamps beyond this are nonsense, and would not fit a ledger column
_MAX_COUNT = 2**53


def mapping(value: Any) -> Mapping[str, Any]:
    """`value` if it is an object, else an empty one."""
    if type(value) is dict:  # what orjson makes: skips the slower check against the ABC
        return value
    return value if isinstance(value, Mapping) else {}


def items(value: Any) -> list[Any]:
    """`value` if it is an array, else an empty one."""
    return value if isinstance(value, list) else []


def text(value: Any) -> str | None:
    """`value` if it is a string, else None."""
    return value if isinstance(value, str) else None


def count(value: Any) -> int:
    """A token count or timestamp: a non-negative int (integral floats and digit strings are
    accepted, as providers send them), 0 for anything else."""
    if type(value) is int:  # the usual case, on every answer's path
        return value if 0 <= value < _MAX_COUNT else 0
    if isinstance(value, bool):
        return 0
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value < _MAX_COUNT else 0


def number(value: Any) -> float | None:
    """A finite number as a float, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value) if abs(value) < 1e300 else math.inf
    return result if math.isfinite(result) else None


def json_text(value: Any, error_class: ErrorClass = ErrorClass.INVALID_OUTPUT) -> str:
    """`value` as JSON text. orjson parses deeper nesting than it writes: a value too deep (or
    an integer too big) to write again is an unusable answer."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise UpstreamError(error_class, "upstream sent a value too deep or too large") from None
