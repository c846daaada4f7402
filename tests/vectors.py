"""Loader for the recorded provider traffic in `tests/data/vectors` (VCR cassettes, YAML;
MIT-licensed data recorded by pydantic-ai, its licence file beside it).

Each cassette file holds `interactions[]`, each a request and the provider's response as it
was recorded. `Interaction` flattens one of them into what the dialect tests need.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import yaml

# the folders whose traffic is the OpenAI Chat Completions wire format
OPENAI_COMPATIBLE = ("openai", "openrouter", "groq", "cerebras", "deepseek", "mistral", "ollama")


_IN_REPOSITORY = Path(__file__).resolve().parent / "data" / "vectors"


def vectors_dir() -> Path:
    """The recorded traffic: inside the repository, so a plain clone tests itself.
    TURNOUT_VECTORS names another directory of cassettes to run the same tests on."""
    env = os.environ.get("TURNOUT_VECTORS")
    if env and Path(env).is_dir():
        return Path(env)
    return _IN_REPOSITORY


def missing(*folders: str) -> str | None:
    """Why the recorded traffic of these provider folders is not here (None: it is)."""
    root = vectors_dir()
    absent = [folder for folder in folders if not (root / folder).is_dir()]
    if not absent:
        return None
    named = "" if root == _IN_REPOSITORY else " (named by TURNOUT_VECTORS)"
    return f"recorded traffic {', '.join(absent)} not found in {root}{named}"


def require(*folders: str) -> None:
    """Skip the calling test module, with the reason, unless these folders are here."""
    reason = missing(*folders)
    if reason:
        pytest.skip(reason, allow_module_level=True)


def needs(*folders: str) -> pytest.MarkDecorator:
    """Mark a test that replays these folders: skipped, with the reason, without them."""
    reason = missing(*folders)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def cassette(folder: str, name: str) -> Path:
    """One cassette file; the test is skipped, with the reason, when it is not there."""
    path = vectors_dir() / folder / name
    if not path.is_file():
        pytest.skip(missing(folder) or f"recorded traffic {folder}/{name} not in {vectors_dir()}")
    return path


def _headers(raw: Any) -> dict[str, str]:
    # VCR records every header as a list of values; lower-case names like HTTP/2 does
    if not isinstance(raw, dict):
        return {}
    return {
        str(name).lower(): ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        for name, value in raw.items()
    }


@dataclass(frozen=True, slots=True)
class Interaction:
    folder: str  # provider folder, e.g. "openrouter"
    file: str  # cassette file name
    index: int  # position in the cassette's interactions[]
    method: str
    uri: str
    request_headers: dict[str, str]
    request_body: Any  # parsed JSON, None when the recorder kept no parsed body
    status: int
    response_headers: dict[str, str]
    response_json: Any = None  # `parsed_body`: the recorder parsed the body as JSON
    response_text: str | None = None  # `body.string`: raw text, e.g. an SSE stream

    @property
    def id(self) -> str:
        """Readable pytest id: `openrouter/test_openrouter_usage.yaml#1`."""
        return f"{self.folder}/{self.file}#{self.index}"

    @property
    def path(self) -> str:
        # urlsplit drops the fragment, e.g. mistral's `.../chat/completions#stream`
        return urlsplit(self.uri).path

    @property
    def is_chat_completions(self) -> bool:
        return self.path.endswith("/chat/completions")

    @property
    def content_type(self) -> str:
        return self.response_headers.get("content-type", "")

    @property
    def is_stream(self) -> bool:
        return self.content_type.startswith("text/event-stream")

    @property
    def response_bytes(self) -> bytes:
        """The response body as it came over the wire (JSON re-serialised when parsed)."""
        if self.response_text is not None:
            return self.response_text.encode("utf-8")
        if self.response_json is not None:
            return orjson.dumps(self.response_json)
        return b""


def _interaction(folder: str, file: str, index: int, raw: dict[str, Any]) -> Interaction:
    request = raw.get("request") or {}
    response = raw.get("response") or {}
    body = response.get("body")
    return Interaction(
        folder=folder,
        file=file,
        index=index,
        method=str(request.get("method", "")),
        uri=str(request.get("uri", "")),
        request_headers=_headers(request.get("headers")),
        request_body=request.get("parsed_body"),
        status=int((response.get("status") or {}).get("code", 0)),
        response_headers=_headers(response.get("headers")),
        response_json=response.get("parsed_body"),
        response_text=body.get("string") if isinstance(body, dict) else None,
    )


@cache
def load_folder(folder: str) -> tuple[Interaction, ...]:
    """Every interaction of every cassette in one provider folder, in file order."""
    root = vectors_dir()
    if not (root / folder).is_dir():
        return ()
    out: list[Interaction] = []
    for path in sorted((root / folder).glob("*.yaml")):
        cassette = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for index, raw in enumerate(cassette.get("interactions") or []):
            out.append(_interaction(folder, path.name, index, raw))
    return tuple(out)


def load(folders: Iterable[str]) -> list[Interaction]:
    return [item for folder in folders for item in load_folder(folder)]


def chat_completions(folders: Iterable[str] = OPENAI_COMPATIBLE) -> list[Interaction]:
    """The interactions spoken in the Chat Completions format (Responses API and Gemini
    `generateContent` calls recorded in the same folders are left out)."""
    return [item for item in load(folders) if item.is_chat_completions]


def find(interaction_id: str) -> Interaction:
    """One interaction by its id, e.g. `groq/test_tool_regular_error.yaml#0`."""
    folder = interaction_id.split("/", 1)[0]
    require(folder)
    for item in load_folder(folder):
        if item.id == interaction_id:
            return item
    raise KeyError(interaction_id)
