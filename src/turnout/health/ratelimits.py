"""Rate-limit headers, read on every response, so a model whose budget is spent is skipped
*before* it answers 429.

Formats (all per model, since limits are per model at every provider we know):
- OpenAI: x-ratelimit-{limit,remaining,reset}-{requests,tokens}; resets as durations
  like `6m0s`, `1.5s`, `20ms`.
- Groq: the same names; requests are per day there, tokens per minute.
- Cerebras: x-ratelimit-{limit,remaining,reset}-requests-day and -tokens-minute; resets
  in seconds (`11.38`).
- Anthropic: anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
  {limit,remaining,reset}; resets as RFC 3339 timestamps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# (header prefix, header suffix, kind): remaining/limit/reset are found by substitution
_OPENAI_KINDS = (
    ("requests", "requests"),
    ("tokens", "tokens"),
    ("requests-day", "requests"),
    ("tokens-minute", "tokens"),
    ("requests-minute", "requests"),
)
_ANTHROPIC_KINDS = (
    ("requests", "requests"),
    ("tokens", "tokens"),
    ("input-tokens", "input_tokens"),
    ("output-tokens", "output_tokens"),
)


@dataclass(slots=True, frozen=True)
class Window:
    kind: str  # requests | tokens | input_tokens | output_tokens
    remaining: int | None
    limit: int | None
    reset_at: float | None  # epoch seconds


def parse_reset(value: str, now: float) -> float | None:
    """A reset as a duration (`6m0s`, `20ms`, `11.38`) or an RFC 3339 time -> epoch seconds."""
    value = value.strip()
    if not value:
        return None
    try:
        return now + max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        return now + sum(float(n) * _UNITS[u] for n, u in parts)
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def parse_windows(headers: Mapping[str, str], now: float) -> list[Window]:
    """Every rate-limit window the headers describe. Header names are matched lower-case."""
    if "ratelimit" not in " ".join(headers).lower():
        return []  # most answers: one scan in C instead of a loop over every header
    lower = {}
    for name, value in headers.items():
        name = name.lower()
        if "ratelimit" in name:
            lower[name] = value
    if not lower:
        return []
    windows = []
    for name, kind in _OPENAI_KINDS:
        window = _window(lower, f"x-ratelimit-{{}}-{name}", kind, now)
        if window:
            windows.append(window)
    for name, kind in _ANTHROPIC_KINDS:
        window = _window(lower, f"anthropic-ratelimit-{name}-{{}}", kind, now)
        if window:
            windows.append(window)
    return windows


def _window(headers: dict[str, str], pattern: str, kind: str, now: float) -> Window | None:
    remaining = _int(headers.get(pattern.format("remaining")))
    if remaining is None:
        return None
    reset = headers.get(pattern.format("reset"))
    return Window(
        kind=kind,
        remaining=remaining,
        limit=_int(headers.get(pattern.format("limit"))),
        reset_at=parse_reset(reset, now) if reset else None,
    )


class RateLimits:
    """The latest windows seen for one model, and whether a request would fit in them."""

    __slots__ = ("windows",)

    def __init__(self) -> None:
        self.windows: list[Window] = []

    def update(self, headers: Mapping[str, str], now: float) -> None:
        windows = parse_windows(headers, now)
        if windows:
            self.windows = windows

    def blocked_until(self, now: float, prompt_tokens: int, max_output: int) -> float | None:
        """When a request would be refused now, the time its exhausted window resets;
        None when it fits (or nothing is known). Output limits are not checked: output is
        not known before the answer, and providers count it after the fact."""
        if not self.windows:
            return None
        need = {"requests": 1, "tokens": prompt_tokens + max_output, "input_tokens": prompt_tokens}
        until = None
        for window in self.windows:
            if window.reset_at is None or window.reset_at <= now or window.kind not in need:
                continue
            if window.remaining is not None and window.remaining < need[window.kind]:
                until = max(until or 0.0, window.reset_at)
        return until

    def exhausted_reset(self, now: float) -> float:
        """The latest reset among windows with nothing left (`now` when there is none)."""
        resets = [
            w.reset_at for w in self.windows if w.remaining == 0 and w.reset_at and w.reset_at > now
        ]
        return max(resets, default=now)
