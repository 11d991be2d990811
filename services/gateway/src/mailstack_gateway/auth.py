"""Who is calling: API key format, scopes, and the principal a verified credential yields.

An API key reads `ms_<key id>_<secret>`. The key id (64 random bits, hex) is the public lookup
handle; the secret (256 random bits, URL-safe base64) is shown once and kept only as SHA-256.
A fast hash is enough: the secret is random and long, so there is nothing to guess offline
that a slow hash would protect (unlike a password).
"""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

KEY_PREFIX = "ms_"
_KEY_ID_BYTES = 8
_SECRET_BYTES = 32
_KEY_PATTERN = re.compile(r"^ms_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


class Scope(StrEnum):
    SEND = "emails:send"
    READ = "emails:read"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)


class AuthenticationError(Exception):
    """No valid credential. One message for every cause, so a caller learns nothing from it."""

    def __init__(self) -> None:
        super().__init__("missing or invalid credentials")


class MissingScopeError(Exception):
    def __init__(self, scope: Scope) -> None:
        super().__init__(f"this credential lacks the {scope.value!r} scope")
        self.scope = scope


@dataclass(frozen=True)
class Principal:
    """A verified caller: the tenant it acts for, what it may do, and which credential it used."""

    tenant_id: str
    scopes: frozenset[Scope]
    credential_id: str
    send_per_minute: int | None = None
    read_per_minute: int | None = None

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes:
            raise MissingScopeError(scope)


@dataclass(frozen=True)
class NewApiKey:
    key_id: str
    secret_sha256: bytes
    token: str  # the whole key; shown once, never stored


def generate_api_key() -> NewApiKey:
    key_id = secrets.token_hex(_KEY_ID_BYTES)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    return NewApiKey(key_id, hash_secret(secret), f"{KEY_PREFIX}{key_id}_{secret}")


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_api_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _KEY_PATTERN.match(token)
    return (match.group(1), match.group(2)) if match else None


def looks_like_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


@dataclass(frozen=True)
class StoredKey:
    """What the database holds of a key, and its tenant's limits."""

    key_id: str
    tenant_id: str
    secret_sha256: bytes
    scopes: frozenset[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    send_per_minute: int | None
    read_per_minute: int | None


def verify_api_key(token: str, stored: StoredKey | None, now: datetime) -> Principal:
    """The principal of `token`, or AuthenticationError, the same for every kind of failure."""
    parts = split_api_key(token)
    # Compare against something even when the key is unknown, so timing says nothing either.
    expected = stored.secret_sha256 if stored is not None else hash_secret("")
    presented = hash_secret(parts[1]) if parts is not None else b""
    matches = hmac.compare_digest(expected, presented)
    if (
        parts is None
        or stored is None
        or not matches
        or stored.key_id != parts[0]
        or stored.revoked_at is not None
        or (stored.expires_at is not None and stored.expires_at <= now)
    ):
        raise AuthenticationError
    return Principal(
        tenant_id=stored.tenant_id,
        scopes=frozenset(Scope(s) for s in stored.scopes if s in ALL_SCOPES),
        credential_id=f"key:{stored.key_id}",
        send_per_minute=stored.send_per_minute,
        read_per_minute=stored.read_per_minute,
    )


def parse_scopes(values: list[str] | str) -> frozenset[Scope]:
    """Scopes from a list or an OAuth-style space-separated string; unknown ones are ignored."""
    words = values.split() if isinstance(values, str) else values
    return frozenset(Scope(word) for word in words if word in ALL_SCOPES)


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or AuthenticationError."""
    if not authorization:
        raise AuthenticationError
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthenticationError
    return token
