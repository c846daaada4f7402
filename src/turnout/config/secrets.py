"""Secrets: only ever `${ENV}` references in config; redacted wherever they could leak."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
REDACTED = "[redacted]"

# a run of this many characters shared with a secret is treated as a leak of it
FRAGMENT = 8
# characters a key, a provider's masked echo of one (`sk-abc…****7654`) or a URL path
# segment holding one are made of: a leaked fragment takes its whole token with it
_TOKEN = re.compile(rf"[A-Za-z0-9_\-.~+/%*…•]{{{FRAGMENT},}}")


class Secret:
    """A secret value that never prints itself."""

    __slots__ = ("_value", "env_var")

    def __init__(self, env_var: str, value: str | None) -> None:
        self.env_var = env_var
        self._value = value

    @classmethod
    def from_reference(cls, reference: str) -> Secret:
        match = ENV_REF.match(reference.strip())
        if not match:
            raise ValueError("must be an environment reference like ${MY_API_KEY}, not a literal")
        name = match.group(1)
        return cls(name, os.environ.get(name) or None)

    @property
    def is_set(self) -> bool:
        return self._value is not None

    def reveal(self) -> str:
        if self._value is None:
            raise LookupError(f"environment variable {self.env_var} is not set")
        return self._value

    def __repr__(self) -> str:
        return f"Secret(${{{self.env_var}}})"

    __str__ = __repr__


def secrets_in(config: Any) -> list[Secret]:
    """Every Secret anywhere in a loaded config (provider keys, the JWT secret, the ledger
    DSN, and whatever secret a later config field adds), found by walking it once."""
    found: list[Secret] = []

    def walk(value: Any) -> None:
        if isinstance(value, Secret):
            found.append(value)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item)

    walk(config)
    return found


def _key_material(value: str) -> str:
    """The part of a secret whose fragments must never leak. For a URL-shaped secret (a
    DSN) that is its password: fragments of `postgresql://` or a host name are no secret,
    and matching them would blank out every log line that names the database."""
    if "://" in value:
        try:
            password = urlsplit(value).password
        except ValueError:
            return value
        return password or ""
    return value


class SecretRedactor:
    """Removes configured secrets from text: each whole secret, and any token (a key-like run
    of characters) sharing 8 or more consecutive characters with one, so a provider's
    truncated or masked echo (`sk-up-SECRE****7654`) goes too.

    Everything is precomputed here, once; a call costs one set lookup per character of the
    key-like tokens in the text. Meant for error paths and log lines, not for every answer."""

    def __init__(self, values: Iterable[str]) -> None:
        # whole values, longest first so that one secret containing another goes whole;
        # shorter than 4 characters would blank out ordinary words
        self._whole = sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)
        self._fragments: frozenset[str] = frozenset(
            material[i : i + FRAGMENT]
            for material in map(_key_material, self._whole)
            for i in range(len(material) - FRAGMENT + 1)
        )

    @classmethod
    def of(cls, secrets: Iterable[Secret]) -> SecretRedactor:
        return cls(secret.reveal() for secret in secrets if secret.is_set)

    def joined(self, other: SecretRedactor) -> SecretRedactor:
        """A redactor of both one's and the other's secrets."""
        return SecretRedactor([*self._whole, *other._whole])

    def __bool__(self) -> bool:
        return bool(self._whole)

    def _leaks(self, token: str) -> bool:
        fragments = self._fragments
        return any(token[i : i + FRAGMENT] in fragments for i in range(len(token) - FRAGMENT + 1))

    def _token(self, match: re.Match[str]) -> str:
        token = match.group()
        return REDACTED if self._leaks(token) else token

    def __call__(self, text: str) -> str:
        if not self._whole or not text:
            return text
        for value in self._whole:
            if value in text:
                text = text.replace(value, REDACTED)
        if self._fragments:
            text = _TOKEN.sub(self._token, text)
        return text

    def optional(self, text: str | None) -> str | None:
        return None if text is None else self(text)


def redact(text: str, secrets: list[Secret]) -> str:
    """`text` without any of `secrets` or any long fragment of one (see SecretRedactor)."""
    return SecretRedactor.of(secrets)(text)
