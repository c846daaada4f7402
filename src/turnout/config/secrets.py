"""Secrets: only ever `${ENV}` references in config; redacted wherever they could leak."""

from __future__ import annotations

import os
import re

ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


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


def redact(text: str, secrets: list[Secret]) -> str:
    """Remove every secret (and any 8+ character prefix of one that a provider echoes back)."""
    for secret in secrets:
        if not secret.is_set:
            continue
        value = secret.reveal()
        if len(value) < 4:
            continue
        text = text.replace(value, "[redacted]")
        # providers echo a truncated key ("Incorrect API key provided: sk-abc123***")
        if len(value) >= 12:
            text = text.replace(value[:8], "[redacted]")
    return text
