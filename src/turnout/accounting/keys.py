"""Gateway API keys: made here, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
import time

from turnout.accounting.records import KeyRecord

KEY_PREFIX = "tk-"


def hash_key(key: str) -> str:
    """sha256: keys are 256-bit random, so a slow password hash would add nothing."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(name: str, **policy: object) -> tuple[str, KeyRecord]:
    """A fresh key and its record. The key itself is returned once and never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = KeyRecord(
        id="key_" + secrets.token_hex(6),
        name=name,
        key_hash=hash_key(key),
        prefix=key[:10],
        created_at=time.time(),
        **policy,  # type: ignore[arg-type]
    )
    return key, record
