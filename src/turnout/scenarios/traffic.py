"""What a scenario's traffic script (its folder's `traffic.py`) is made of: the client calls it
sends, and the changes it makes to the simulated upstreams, each at a simulated time (seconds
from the start of the run), plus helpers for a realistic day of requests."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DAY", "Call", "Change", "prompt_of", "spread_over"]

DAY = 86_400.0  # simulated seconds


@dataclass(frozen=True, slots=True)
class Call:
    """One client request: sent `at` simulated seconds into the run, to a route (or a model)."""

    at: float
    route: str
    prompt_tokens: int  # about this many tokens of user prompt
    max_tokens: int  # the answer's length: the sim's long reply is cut here
    stream: bool = False
    tag: str = ""  # what kind of request it is, for a scenario's own figures
    # the user prompt word for word (an FAQ asked again and again); "" makes one up
    prompt: str = ""
    # more fields of the request body: `user` (a workflow's stickiness key), `response_format`
    body: dict[str, Any] = field(default_factory=dict)
    # image URLs (small data: URLs) sent as image_url parts after the prompt's text part
    images: tuple[str, ...] = ()
    # request headers, such as `x-turnout-session` (the ledger row's `session`)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """A change to one simulated upstream model at a simulated time: `behaviour` holds the sim
    behaviour fields to set (sim/schema.py SimBehaviour), the others keep their values.
    `name` is what expect.yaml refers to (`after: NAME`) and what the report shows."""

    at: float
    provider: str
    model: str
    name: str
    behaviour: dict[str, Any] = field(default_factory=dict)
    # the minutes around it played in close-up (runner.py): False for a change whose timing
    # nothing is judged against (an outage's start), which then costs no real seconds
    close_up: bool = True


def spread_over(
    count: int,
    rng: random.Random,
    start: float = 0.0,
    end: float = DAY,
    peak: float | None = None,
) -> list[float]:
    """`count` send times between `start` and `end` (simulated seconds), busier around `peak`
    (default: the middle) like a working day's traffic, sorted."""
    peak = (start + end) / 2 if peak is None else peak
    span = end - start
    times: list[float] = []
    while len(times) < count:
        at = rng.uniform(start, end)
        # a daily wave: three times as busy at the peak as at the quietest hour
        weight = 2 + math.cos(2 * math.pi * (at - peak) / span)
        if rng.uniform(0, 3) < weight:
            times.append(at)
    return sorted(times)


_WORDS = [
    "the",
    "quarterly",
    "report",
    "lists",
    "revenue",
    "costs",
    "churn",
    "and",
    "open",
    "questions",
    "our",
    "customers",
    "asked",
    "about",
    "pricing",
    "onboarding",
    "support",
    "response",
    "times",
    "across",
    "every",
    "region",
]


def prompt_of(tokens: int, rng: random.Random) -> str:
    """Plain text of about `tokens` tokens (the gateway and the sim count ~4 chars a token)."""
    words: list[str] = []
    chars = 0
    while chars < tokens * 4:
        word = rng.choice(_WORDS)
        words.append(word)
        chars += len(word) + 1
    return " ".join(words)
