"""Optional capture of prompts and answers per route (`capture:` on a route; off by
default), redacted before anything is written, one JSON line per request in
`<data_dir>/captures/<route>.jsonl`, so recorded traffic can be replayed against a
candidate model. Writes happen on a background thread, never on the request path."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from turnout.config.schema import CaptureConfig
from turnout.config.secrets import Secret, SecretRedactor
from turnout.model import Request, Response

log = logging.getLogger("turnout.capture")

# Built-in rules by name. A rule is a regular expression whose whole match is replaced; a
# labelled one (label, value) keeps its label and replaces only the value that follows it.
_KEY_CHARS = "0-9A-Za-z_-"
Rule = str | tuple[str, str]
BUILT_IN: dict[str, Rule] = {
    "email": r"[\w.+-]+@[\w-]+\.[\w.-]+",
    "phone": r"\+?\d[\d ()-]{7,}\d",
    "card": r"\b(?:\d[ -]?){13,19}\b",
    # API tokens with a vendor prefix: OpenAI/Anthropic sk-, Stripe pk/rk, GitHub, Slack
    "api_token": r"\b(?:sk|tk|pk|rk|ghp|xox[bp])[-_][A-Za-z0-9_-]{12,}\b",
    # AWS access key ids: AKIA (long-term) and ASIA (temporary, STS), 20 characters
    "aws_key": r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
    # AWS secret access keys, 40 characters of base64: only where labelled as one, since
    # 40 such characters alone are as likely a hash
    "aws_secret": (
        r"(?i:\baws_?secret(?:_?access)?_?key|\bsecret_?access_?key)[\"']?\s*[:=]\s*[\"']?",
        r"[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])",
    ),
    # Google API keys (Gemini among them): AIza and 35 more characters
    "google_api_key": rf"(?<![{_KEY_CHARS}])AIza[{_KEY_CHARS}]{{35}}(?![{_KEY_CHARS}])",
    # JSON Web Tokens: three base64url segments, the first a JSON object (`{"` -> eyJ)
    "jwt": r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
    # password=..., passwd: ..., "pwd": "..." (the name stays, the value goes)
    "password": (
        r"(?i:\b(?:password|passwd|passphrase|pwd)[\"']?\s*[:=]\s*[\"']?)",
        r"[^\s\"',;&]+",
    ),
    # national identity numbers: US Social Security numbers (area not 000, 666 or 9xx, group
    # not 00, serial not 0000) and UK National Insurance numbers (HMRC's prefix rules)
    "national_id": (
        r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"
        r"|\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
        r" ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
    ),
}
# names that stand for several rules: "secret" is every kind of credential above
GROUPS = {"secret": ["api_token", "aws_key", "aws_secret", "google_api_key", "jwt", "password"]}
REDACTED = "[redacted]"


def _expand(rules: list[str]) -> list[Rule]:
    """Rule names (and groups of them) to rules; anything else is the user's own regex."""
    expanded: list[Rule] = []
    for rule in rules:
        for name in GROUPS.get(rule, [rule]):
            expanded.append(BUILT_IN.get(name, name))
    return expanded


class Redactor:
    """Replaces what the rules match, and every configured secret, in a structure's strings."""

    def __init__(self, rules: list[str], secrets: list[Secret] | None = None) -> None:
        parts, self._labelled = [], set()
        for i, rule in enumerate(_expand(rules)):
            if isinstance(rule, tuple):
                label, value = rule
                parts.append(f"(?P<r{i}>(?P<r{i}_label>{label}){value})")
                self._labelled.add(f"r{i}")
            else:
                parts.append(f"(?P<r{i}>{rule})")
        self.pattern = re.compile("|".join(parts)) if parts else None
        self.secrets = SecretRedactor.of(secrets or [])

    def _replace(self, match: re.Match[str]) -> str:
        rule = match.lastgroup
        if rule in self._labelled:
            return match.group(f"{rule}_label") + REDACTED
        return REDACTED

    def text(self, value: str) -> str:
        if self.secrets:
            value = self.secrets(value)
        return self.pattern.sub(self._replace, value) if self.pattern is not None else value

    def __call__(self, value: Any) -> Any:
        """The same structure with every matching string part replaced."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        return value


class Capture:
    def __init__(
        self,
        directory: Path,
        routes: dict[str, CaptureConfig],
        secrets: list[Secret] | None = None,
    ) -> None:
        self.directory = directory
        self.routes = {
            name: (config, Redactor(config.redact, secrets)) for name, config in routes.items()
        }
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture")
        self._pending: list[asyncio.Future[None]] = []

    def wants(self, route: str) -> bool:
        entry = self.routes.get(route)
        return entry is not None and random.random() < entry[0].sample

    def record(
        self, row_id: str, route: str, model: str, request: Request, response: Response
    ) -> None:
        _, redact = self.routes[route]
        line = {
            "id": row_id,
            "route": route,
            "model": model,
            "request": redact(
                {
                    "messages": request.messages,
                    "tools": request.tools,
                    "tool_choice": request.tool_choice,
                    "response_format": request.response_format,
                    "temperature": request.temperature,
                    "max_tokens": request.max_tokens,
                }
            ),
            "response": redact(
                {
                    "content": response.content,
                    "tool_calls": [
                        {"id": c.id, "name": c.name, "arguments": c.arguments}
                        for c in response.tool_calls
                    ],
                    "finish_reason": response.finish_reason,
                }
            ),
        }
        path = self.directory / f"{route}.jsonl"
        data = orjson.dumps(line) + b"\n"
        future = asyncio.get_running_loop().run_in_executor(self._thread, _append, path, data)
        self._pending.append(future)
        self._pending = [f for f in self._pending if not f.done()]

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        self._thread.shutdown(wait=True)


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as file:
        file.write(data)
