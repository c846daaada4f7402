"""fallback-tier's traffic: a support assistant's working day on route `assistant` (1,500
requests from 09:00 to 18:00, busiest around midday; a third of them one of twenty frequent
questions asked word for word, the rest questions of their own, half of those streamed), and
at 15:00 a launch e-mail: 120 more requests in five minutes.

What happens to the upstreams: Flash answers a tenth of requests with 429s (Retry-After 10 s)
from 10:30 to 12:30; us-east is down from 11:30 to 12:15; during the launch burst Flash's
quota is spent (every request a 429, Retry-After 60 s) while the three Llama regions admit 8
requests a minute each, fewer than the burst brings."""

from __future__ import annotations

import random

from turnout.scenarios.traffic import Call, Change, spread_over

STORY = "Flash hits its limits, a Llama region goes down, a burst: queue and stale answers hold"
OPENS, CLOSES = 9 * 3600, 18 * 3600
DURATION = float(CLOSES)
REQUESTS = 1500
BURST_AT, BURST_FOR, BURST = 15 * 3600, 300.0, 120  # the launch e-mail's five minutes
FAQ_SHARE = 1 / 3
LLAMA = "meta-llama/Llama-3.3-70B-Instruct"
FLASH = "gemini-2.0-flash"

FAQ = [
    "How do I reset my password?",
    "Where can I download my invoices?",
    "How do I add a teammate to my workspace?",
    "Can I change the email address on my account?",
    "What payment methods do you accept?",
    "How do I cancel my subscription?",
    "Why was my card declined?",
    "How do I export my data as CSV?",
    "Is there a discount for annual billing?",
    "How do I turn on two-factor authentication?",
    "What are your support hours?",
    "How do I connect the Slack integration?",
    "Can I restore a deleted project?",
    "How do I change my plan?",
    "Where do I find my API key?",
    "What is the limit on file uploads?",
    "How do I delete my account?",
    "Do you offer a free trial?",
    "How do I rename my workspace?",
    "Which browsers do you support?",
]

# Gemini's answer to a spent quota (a 429 saying when to come back), and a region's load
# balancer with no healthy node behind it
LIMITED = {"rate_limit_rate": 0.1, "retry_after": 10}
EXHAUSTED = {"rate_limit_rate": 1.0, "retry_after": 60}
UNLIMITED = {"rate_limit_rate": 0.0, "retry_after": None}
DOWN = {"outages": [{"start": 0, "end": 864_000, "status": 503, "message": "no healthy upstream"}]}

CHANGES = [
    # no close-ups for these: nothing is timed against them, and they cost no real seconds
    Change(10.5 * 3600, "google", FLASH, "flash rate limits", LIMITED, close_up=False),
    Change(11.5 * 3600, "us-east", LLAMA, "us-east outage", DOWN, close_up=False),
    Change(12.25 * 3600, "us-east", LLAMA, "us-east back", {"outages": []}, close_up=False),
    Change(12.5 * 3600, "google", FLASH, "flash limits lifted", UNLIMITED, close_up=False),
    # the burst in close-up: its queue waits a minute's window of the regions
    Change(BURST_AT, "google", FLASH, "launch burst: flash quota spent", EXHAUSTED),
    Change(BURST_AT + BURST_FOR, "google", FLASH, "flash quota back", UNLIMITED),
]


def _call(at: float, rng: random.Random, tag: str) -> Call:
    if rng.random() < FAQ_SHARE:
        index = rng.randrange(len(FAQ))
        # asked word for word, whole answers of the same length: identical requests, so a
        # stored answer can stand in for one
        return Call(at, "assistant", 0, 120 + 10 * index, tag="faq", prompt=FAQ[index])
    return Call(
        at,
        "assistant",
        prompt_tokens=rng.randint(60, 1_200),  # a question with the customer's context
        max_tokens=rng.randint(80, 400),
        stream=rng.random() < 0.5,
        tag=tag,
    )


def calls(rng: random.Random) -> list[Call]:
    day = [_call(at, rng, "question") for at in spread_over(REQUESTS, rng, OPENS, CLOSES)]
    burst = [_call(rng.uniform(BURST_AT, BURST_AT + BURST_FOR), rng, "burst") for _ in range(BURST)]
    return sorted(day + burst, key=lambda call: call.at)
