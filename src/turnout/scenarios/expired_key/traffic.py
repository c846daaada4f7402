"""expired-key's traffic: a working day of a chat feature on route `chat` (a thousand requests
from 09:00 to 18:00, busiest around midday: short questions, documents to summarise, a few long reports),
and at noon the Scout key on OpenRouter expires for the rest of the day."""

from __future__ import annotations

import random

from turnout.scenarios.traffic import DAY, Call, Change, spread_over

STORY = "Scout's OpenRouter key expires at noon: Haiku carries the day, the alert fires, it costs"
DURATION = DAY
REQUESTS = 1000
OPENS, CLOSES = 9 * 3600, 18 * 3600  # the feature's users work 09:00 to 18:00
KEY_EXPIRES_AT = DAY / 2  # noon

# OpenRouter's answer to a key it no longer knows (HTTP 401), word for word
EXPIRED = {
    "outages": [
        {"start": 0, "end": 10 * DAY, "status": 401, "message": "No cookie auth credentials found"}
    ]
}

CHANGES = [
    Change(
        KEY_EXPIRES_AT,
        provider="openrouter",
        model="meta-llama/llama-4-scout",
        name="scout key expires",
        behaviour=EXPIRED,
    )
]

# (share, tag, prompt tokens range, answer tokens range)
_MIX = [
    (0.60, "question", (40, 400), (40, 250)),
    (0.30, "document", (1_500, 4_000), (150, 400)),
    (0.10, "report", (6_000, 12_000), (300, 700)),
]


def calls(rng: random.Random) -> list[Call]:
    """The day's requests; half of them stream."""
    out = []
    for at in spread_over(REQUESTS, rng, start=OPENS, end=CLOSES):
        roll = rng.random()
        for share, tag, prompt, answer in _MIX:
            if roll < share:
                break
            roll -= share
        out.append(
            Call(
                at,
                "chat",
                prompt_tokens=rng.randint(*prompt),
                max_tokens=rng.randint(*answer),
                stream=rng.random() < 0.5,
                tag=tag,
            )
        )
    return out
