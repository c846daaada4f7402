"""Who is calling: a gateway key (Authorization: Bearer, or x-api-key as Anthropic clients
send it) or a JWT mapped to a key by a claim. Failures are 401s in the client's dialect.

An address whose credentials keep failing (10 in a minute) is refused with a 429 until the
oldest of those failures is a minute old, whatever it sends meanwhile: a good key is refused
too, or a right guess would stand out as the one answer that is not a 429.

Keys live in the store (hashed); this process keeps them in memory, refreshed every few
seconds so a key revoked by `turnout keys revoke` stops working everywhere within moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWKSet

from turnout import clock
from turnout.accounting.keys import hash_key
from turnout.accounting.limits import FailureLimiter
from turnout.accounting.records import KeyRecord
from turnout.accounting.store.base import Store
from turnout.config.schema import Config, JWTConfig, is_loopback
from turnout.model.errors import GatewayError

log = logging.getLogger("turnout.auth")

_REFRESH = 2.0  # seconds between reloads of the key table
_MISS_TTL = 2.0  # an unknown key is not looked up in the store again for this long


_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


class AuthError(GatewayError):
    """The caller is not who it must be (401), may not do this (403) or is blocked (429)."""

    def __init__(
        self, status: int, message: str, code: str, headers: dict[str, str] | None = None
    ) -> None:
        error_type = _ERROR_TYPES.get(status, "authentication_error")
        super().__init__(status, message, code=code, error_type=error_type, headers=headers)


@dataclass(slots=True, frozen=True)
class Identity:
    key: KeyRecord | None  # None: anonymous (auth is off)
    via: str  # key | jwt | anonymous

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key else None

    @property
    def admin(self) -> bool:
        return self.key is not None and self.key.admin


ANONYMOUS = Identity(None, "anonymous")


def credential(headers: Any) -> str | None:
    value = headers.get("authorization", "")
    if value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return headers.get("x-api-key") or None


def _well_formed(token: str) -> bool:
    """Keys and tokens are printable ASCII; anything else (raw bytes arrive from aiohttp as
    surrogate escapes) cannot be a key, and must not reach the hashing or JWT code."""
    return token.isascii() and token.isprintable()


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


@dataclass(slots=True, frozen=True)
class AuthRules:
    """What the config says about callers: whether a key is required, and how JWTs are
    checked. Part of the gateway's runtime snapshot; the Authenticator (the key table, the
    failure limiter) outlives it."""

    required: bool
    jwt: JWTConfig | None = None
    jwks: PyJWKSet | None = None

    @classmethod
    def of(cls, config: Config) -> AuthRules:
        required = config.auth.required
        jwt_config = config.auth.jwt
        jwks = None
        if jwt_config and jwt_config.jwks_file:
            jwks = PyJWKSet.from_json(Path(jwt_config.jwks_file).read_text())
        return cls(
            required if required is not None else not is_loopback(config.server.host),
            jwt_config,
            jwks,
        )


class Authenticator:
    """The key table (refreshed from the store) and the failed-authentication limiter: the
    long-lived half of authentication. Each call takes the rules of the request's runtime."""

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self._by_hash: dict[str, KeyRecord] = {}
        self._misses: dict[str, float] = {}
        self.failures = FailureLimiter()
        self._refresh: asyncio.Task[None] | None = None

    async def start(self, rules: AuthRules) -> None:
        if not rules.required:
            log.warning(
                "authentication is off (loopback bind): any local process can use this gateway"
            )
        if self.store is not None:
            await self._load()
            self._refresh = asyncio.create_task(self._refresh_loop(), name="keys-refresh")
        if rules.required and not self._by_hash and rules.jwt is None:
            log.warning("authentication is required but no key exists: `turnout keys create`")

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh

    async def _load(self) -> None:
        if self.store is None:  # no ledger, no stored keys (callers check first)
            return
        keys = await self.store.list_keys()
        self._by_hash = {k.key_hash: k for k in keys}

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(_REFRESH)
            try:
                await self._load()
            except Exception as exc:  # noqa: BLE001 - keep the last good table
                log.warning("could not reload gateway keys: %s", exc)

    def by_name(self, name: str) -> KeyRecord | None:
        """The key with this id, or this name: its newest active key (a rotation makes the
        successor under the same name before the old one is revoked), else its newest."""
        named = [k for k in self._by_hash.values() if name in (k.name, k.id)]
        pool = [k for k in named if k.revoked_at is None] or named
        return max(pool, key=lambda k: k.created_at, default=None)

    async def _key_named(self, name: str) -> KeyRecord | None:
        """A key by name or id; one made since the last refresh is found by reloading."""
        record = self.by_name(name)
        if record is not None or self.store is None:
            return record
        now = time.monotonic()
        if now - self._misses.get("name:" + name, -_MISS_TTL) < _MISS_TTL:
            return None
        await self._load()
        record = self.by_name(name)
        if record is None:
            self._misses["name:" + name] = now
        return record

    async def identify(
        self, headers: Any, rules: AuthRules, address: str | None = None
    ) -> Identity:
        """The caller of a request with these headers, under these rules, from this client
        address (None: not known, so not limited)."""
        token = self._token(headers, rules, address)
        if token is None:
            return ANONYMOUS
        try:
            return await self._identify(token, rules)
        except AuthError:
            if address is not None:
                # (the lockout's minute is a time window: turnout.clock)
                self.failures.failed(address, clock.monotonic())
            raise

    def identify_now(
        self, headers: Any, rules: AuthRules, address: str | None = None
    ) -> Identity | None:
        """`identify` where nothing is waited for, without a coroutine (the usual request: no
        key sent, or one already in the table): its caller (or AuthError); None when the key
        must be looked up or verified (a JWT, a key the table lacks): await `identify`."""
        token = self._token(headers, rules, address)
        if token is None:
            return ANONYMOUS
        if not _well_formed(token) or (rules.jwt is not None and _looks_like_jwt(token)):
            return None
        key_hash = hash_key(token)
        record = self._by_hash.get(key_hash)
        if record is None:
            # auth off and a key nobody made (OpenAI clients always send one), looked up
            # in the store less than _MISS_TTL ago: what `_identify` would say
            recent = time.monotonic() - self._misses.get(key_hash, -_MISS_TTL) < _MISS_TTL
            if not rules.required and (self.store is None or recent):
                return ANONYMOUS
            return None
        if record.revoked_at is not None:
            return None  # (refused, with its reason and the failure counted, by `identify`)
        return Identity(record, "key")

    def _token(self, headers: Any, rules: AuthRules, address: str | None) -> str | None:
        """The request's key; None for an anonymous caller where keys are optional. AuthError
        for an address blocked after failed attempts, or a missing key where one is required."""
        if address is not None:
            self._refuse_if_blocked(address)
        token = credential(headers)
        if token is None and rules.required:
            raise AuthError(
                401, "Missing API key: send Authorization: Bearer <key>.", "missing_api_key"
            )
        return token

    def _refuse_if_blocked(self, address: str) -> None:
        wait = self.failures.blocked_for(address, clock.monotonic())
        if wait is None:
            return
        seconds = max(1, math.ceil(wait))
        raise AuthError(
            429,
            f"Too many failed authentications from this address; retry in {seconds}s.",
            "too_many_failed_authentications",
            headers={"retry-after": str(seconds)},
        )

    async def _identify(self, token: str, rules: AuthRules) -> Identity:
        if not _well_formed(token):
            if not rules.required:
                return ANONYMOUS  # auth is off: a key that means nothing, as any unknown one
            raise AuthError(401, "Invalid API key: keys are printable ASCII.", "invalid_api_key")
        if rules.jwt is not None and _looks_like_jwt(token):
            return await self._from_jwt(token, rules)
        record = await self._lookup(hash_key(token))
        if record is None:
            if not rules.required:
                # auth is off: OpenAI clients always send some key; an unknown one is fine
                return ANONYMOUS
            raise AuthError(401, "Invalid API key.", "invalid_api_key")
        if record.revoked_at is not None:
            raise AuthError(401, f"API key {record.id} has been revoked.", "revoked_api_key")
        return Identity(record, "key")

    async def _lookup(self, key_hash: str) -> KeyRecord | None:
        record = self._by_hash.get(key_hash)
        if record is not None or self.store is None:
            return record
        now = time.monotonic()
        if now - self._misses.get(key_hash, -_MISS_TTL) < _MISS_TTL:
            return None
        record = await self.store.get_key_by_hash(key_hash)  # made since the last refresh?
        if record is None:
            self._misses[key_hash] = now
            if len(self._misses) > 10_000:
                self._misses.clear()
        else:
            self._by_hash[key_hash] = record
        return record

    async def _from_jwt(self, token: str, rules: AuthRules) -> Identity:
        config = rules.jwt
        assert config is not None
        try:
            if config.algorithm == "HS256":
                assert config.secret is not None
                key: Any = config.secret.reveal()
            else:
                kid = jwt.get_unverified_header(token).get("kid")
                assert rules.jwks is not None
                keys = [k for k in rules.jwks.keys if kid is None or k.key_id == kid]
                if not keys:
                    raise AuthError(401, "JWT signed with an unknown key.", "invalid_token")
                key = keys[0].key
            claims = jwt.decode(
                token,
                key,
                algorithms=[config.algorithm],
                audience=config.audience,
                issuer=config.issuer,
                options={"require": ["exp"], "verify_aud": config.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "JWT has expired.", "expired_token") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, f"Invalid JWT: {exc}.", "invalid_token") from None
        subject = claims.get(config.claim)
        record = await self._key_named(str(subject)) if subject is not None else None
        if record is None or record.revoked_at is not None:
            raise AuthError(
                401, f"JWT claim {config.claim}={subject!r} names no active key.", "invalid_token"
            )
        return Identity(record, "jwt")

    @staticmethod
    def authorize(identity: Identity, route: str) -> None:
        key = identity.key
        if key is not None and key.routes is not None and route not in key.routes:
            raise AuthError(
                403,
                f"Key {key.id} may not use {route!r} (allowed: {', '.join(key.routes)}).",
                "route_not_allowed",
            )
