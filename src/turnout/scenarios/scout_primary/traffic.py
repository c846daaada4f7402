"""scout-primary's traffic: a product assistant's day on route `assistant`, a thousand queries
from 08:00 to 20:00, busiest around 14:00: short questions, tool calls (the model must call
one of the product's tools), screenshots (a small image with a question) and long documents,
and a few requests the product sends to Haiku itself (`model: haiku`). Nothing changes during
the day: Scout's own small error and 429 rates (config.yaml) are what falls back."""

from __future__ import annotations

import base64
import random
import struct
import zlib
from typing import Any

from turnout.scenarios.traffic import DAY, Call, Change, spread_over

STORY = "Scout as the cheap primary, Haiku as the fallback: what it saves against Haiku-only"
DURATION = DAY
QUERIES = 1000
OPENS, CLOSES, PEAK = 8 * 3600, 20 * 3600, 14 * 3600
ROUTE = "assistant"
FORCED = "haiku"  # the product's own choice for a few requests, no failover

CHANGES: list[Change] = []  # Scout's faults are its everyday ones (config.yaml)

# the product's tools: a tool-call request must be answered with a call to one of them
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order by its number and tell its status.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "open_ticket",
            "description": "Open a support ticket for the customer.",
            "parameters": {
                "type": "object",
                "properties": {
                    "summary": {"type": "string"},
                    "priority": {"type": "string", "enum": ["low", "normal", "urgent"]},
                },
                "required": ["summary", "priority"],
            },
        },
    },
]


def png(width: int, height: int, rgb: tuple[int, int, int]) -> str:
    """A small PNG of one colour as a data: URL (a real image part, a few hundred bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    image = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(image).decode()


# (share, tag, prompt tokens range, answer tokens range): an assistant's answers are longer
# than its users' questions; the documents are the long prompts
_MIX = [
    (0.735, "question", (20, 200), (250, 800)),
    (0.13, "tool", (30, 150), (0, 0)),  # the answer is the tool call's arguments
    (0.10, "image", (15, 80), (150, 600)),
    (0.025, "document", (6_000, 24_000), (400, 1_000)),
    (0.01, "forced", (20, 200), (250, 800)),  # model: haiku, chosen by the product
]
assert abs(sum(share for share, *_ in _MIX) - 1) < 1e-9  # every roll lands on a kind
_TOOL_ANSWER = 64  # max_tokens of a tool call: its arguments are a few tokens


def calls(rng: random.Random) -> list[Call]:
    """The day's queries; most questions stream, tool calls and documents mostly do not."""
    out = []
    for at in spread_over(QUERIES, rng, start=OPENS, end=CLOSES, peak=PEAK):
        roll = rng.random()
        for share, tag, prompt, answer in _MIX:
            if roll < share:
                break
            roll -= share
        route, body = ROUTE, {}
        images: tuple[str, ...] = ()
        if tag == "tool":
            body = {"tools": TOOLS, "tool_choice": "required"}
        elif tag == "image":
            shade = tuple(rng.randrange(256) for _ in range(3))
            images = (png(16, 16, (shade[0], shade[1], shade[2])),)
        elif tag == "forced":
            route = FORCED
        out.append(
            Call(
                at,
                route,
                prompt_tokens=rng.randint(*prompt),
                max_tokens=rng.randint(*answer) or _TOOL_ANSWER,
                stream=rng.random() < (0.7 if tag in ("question", "image", "forced") else 0.2),
                tag=tag,
                body=body,
                images=images,
            )
        )
    return out
