"""Verifying credentials: API keys against Postgres (cached), JWTs against a JWKS or a key.

Both yield an `auth.Principal`. Every failure is an `auth.AuthenticationError` whatever its
cause; the cause is logged (never the credential itself) and counted.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import httpx
import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core.tables import api_keys, tenants
from mailstack_gateway import auth
from mailstack_gateway.observability import AUTH_FAILURES

log = structlog.get_logger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class TenantLimits:
    send_per_minute: int | None
    read_per_minute: int | None


class CredentialStore:
    """The SQL behind authentication: keys with their tenant's limits, tenants, last use."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def find_key(self, key_id: str) -> auth.StoredKey | None:
        query = (
            select(
                api_keys.c.id,
                api_keys.c.tenant_id,
                api_keys.c.secret_sha256,
                api_keys.c.scopes,
                api_keys.c.expires_at,
                api_keys.c.revoked_at,
                tenants.c.send_per_minute,
                tenants.c.read_per_minute,
            )
            .join(tenants, tenants.c.id == api_keys.c.tenant_id)
            .where(api_keys.c.id == key_id)
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        if row is None:
            return None
        return auth.StoredKey(
            key_id=row.id,
            tenant_id=row.tenant_id,
            secret_sha256=bytes(row.secret_sha256),
            scopes=frozenset(row.scopes),
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            send_per_minute=row.send_per_minute,
            read_per_minute=row.read_per_minute,
        )

    async def find_tenant(self, tenant_id: str) -> TenantLimits | None:
        query = select(tenants.c.send_per_minute, tenants.c.read_per_minute).where(
            tenants.c.id == tenant_id
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return None if row is None else TenantLimits(row.send_per_minute, row.read_per_minute)

    async def record_last_used(self, used: dict[str, datetime]) -> None:
        """One statement for every key used since the last flush; never moves a time back."""
        if not used:
            return
        statement = (
            update(api_keys)
            .where(api_keys.c.id == bindparam("key_id"))
            .where(
                (api_keys.c.last_used_at.is_(None))
                | (api_keys.c.last_used_at < bindparam("used_at"))
            )
            .values(last_used_at=bindparam("used_at"))
        )
        async with self._engine.begin() as connection:
            await connection.execute(
                statement, [{"key_id": key, "used_at": at} for key, at in used.items()]
            )


V = TypeVar("V")


class _TtlCache(Generic[V]):
    """A bounded map whose entries expire: enough for a hot set of credentials and tenants."""

    def __init__(self, ttl_seconds: float, max_entries: int, clock: Clock) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, V | None]:
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry[0] > self._ttl:
            return False, None
        return True, entry[1]

    def put(self, key: str, value: V) -> None:
        self._entries[key] = (self._clock(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class ApiKeyAuthenticator:
    """API keys, read through a short-lived cache (revocation takes effect within its TTL);
    last use is buffered in memory and written in one statement per flush interval."""

    def __init__(
        self,
        store: CredentialStore,
        cache_seconds: float,
        clock: Clock = time.monotonic,
        max_cached: int = 10_000,
    ) -> None:
        self._store = store
        self._cache: _TtlCache[auth.StoredKey | None] = _TtlCache(cache_seconds, max_cached, clock)
        self._last_used: dict[str, datetime] = {}

    async def authenticate(self, token: str) -> auth.Principal:
        parts = auth.split_api_key(token)
        stored = None
        if parts is not None:
            found, stored = self._cache.get(parts[0])
            if not found:
                stored = await self._store.find_key(parts[0])
                self._cache.put(parts[0], stored)
        now = datetime.now(UTC)
        try:
            principal = auth.verify_api_key(token, stored, now)
        except auth.AuthenticationError:
            reason = "unknown" if stored is None else "rejected"
            AUTH_FAILURES.labels(kind="api_key", reason=reason).inc()
            log.info("auth.rejected", kind="api_key", reason=reason)
            raise
        assert stored is not None
        self._last_used[stored.key_id] = now
        return principal

    async def flush_last_used(self) -> None:
        used, self._last_used = self._last_used, {}
        try:
            await self._store.record_last_used(used)
        except Exception as error:
            # Last use is informational: keep it for the next flush rather than fail anything.
            log.warning("auth.last_used.flush_failed", error=type(error).__name__)
            for key, at in used.items():
                self._last_used[key] = max(at, self._last_used.get(key, at))

    async def run_flusher(self, interval_seconds: float) -> None:
        try:
            while True:
                await asyncio.sleep(interval_seconds)
                await self.flush_last_used()
        finally:
            await self.flush_last_used()


@dataclass(frozen=True)
class JwtSettings:
    issuer: str
    audience: str
    algorithms: Sequence[str]
    jwks_url: str | None = None
    public_key: str | None = None
    tenant_claim: str = "tenant"
    scope_claim: str = "scope"
    jwks_cache_seconds: float = 300.0
    # How long a tenant's existence and limits are trusted, as for API keys.
    tenant_cache_seconds: float = 10.0


class JwtVerifier:
    """JWT bearer tokens from an identity provider (OIDC client credentials).

    The accepted algorithms come from configuration, never from the token. Keys come from a
    configured public key or from a JWKS URL, cached; a token naming an unknown `kid` triggers
    at most one refetch per kid until the cache expires, so garbage tokens cannot make us
    hammer the identity provider.
    """

    def __init__(
        self,
        settings: JwtSettings,
        store: CredentialStore,
        http: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if (settings.jwks_url is None) == (settings.public_key is None):
            raise ValueError("configure exactly one of a JWKS URL and a public key")
        if not settings.algorithms or any(
            alg.lower() == "none" or alg.upper().startswith("HS") for alg in settings.algorithms
        ):
            raise ValueError("JWT algorithms must be asymmetric (RS*, PS*, ES*, EdDSA)")
        self._settings = settings
        self._store = store
        self._http = http
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._refetched_for: set[str] = set()
        self._lock = asyncio.Lock()
        self._tenants: _TtlCache[TenantLimits | None] = _TtlCache(
            settings.tenant_cache_seconds, 10_000, clock
        )
        self._static_key: Any = (
            serialization.load_pem_public_key(settings.public_key.encode())
            if settings.public_key is not None
            else None
        )

    async def authenticate(self, token: str) -> auth.Principal:
        try:
            claims = await self._claims(token)
            tenant_id = claims.get(self._settings.tenant_claim)
            if not isinstance(tenant_id, str) or not tenant_id:
                raise jwt.InvalidTokenError(f"no {self._settings.tenant_claim!r} claim")
            limits = await self._tenant(tenant_id)
            if limits is None:
                raise jwt.InvalidTokenError("the token's tenant does not exist")
        except (jwt.PyJWTError, ValueError, httpx.HTTPError) as error:
            AUTH_FAILURES.labels(kind="jwt", reason=type(error).__name__).inc()
            log.info("auth.rejected", kind="jwt", reason=type(error).__name__, detail=str(error))
            raise auth.AuthenticationError from error
        raw_scopes = claims.get(self._settings.scope_claim, [])
        return auth.Principal(
            tenant_id=tenant_id,
            scopes=auth.parse_scopes(raw_scopes if isinstance(raw_scopes, list | str) else []),
            credential_id=f"jwt:{claims.get('sub', '?')}",
            send_per_minute=limits.send_per_minute,
            read_per_minute=limits.read_per_minute,
        )

    async def _claims(self, token: str) -> dict[str, Any]:
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in self._settings.algorithms:
            raise jwt.InvalidAlgorithmError(f"algorithm {header.get('alg')!r} is not accepted")
        key = self._static_key if self._static_key is not None else await self._jwk(header)
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=list(self._settings.algorithms),
            audience=self._settings.audience,
            issuer=self._settings.issuer,
            options={"require": ["exp", "iss", "aud"]},
            leeway=30,
        )
        return claims

    async def _jwk(self, header: dict[str, Any]) -> Any:
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise jwt.InvalidTokenError("the token names no key (kid)")
        async with self._lock:
            if (
                self._fetched_at is None
                or self._clock() - self._fetched_at > self._settings.jwks_cache_seconds
            ):
                self._refetched_for.clear()
                await self._fetch_jwks()
            elif kid not in self._keys and kid not in self._refetched_for:
                self._refetched_for.add(kid)
                await self._fetch_jwks()
        if kid not in self._keys:
            raise jwt.InvalidTokenError(f"unknown key id {kid!r}")
        return self._keys[kid]

    async def _fetch_jwks(self) -> None:
        assert self._settings.jwks_url is not None
        client = self._http or httpx.AsyncClient(timeout=3.0)
        try:
            response = await client.get(self._settings.jwks_url)
            response.raise_for_status()
            key_set = jwt.PyJWKSet.from_dict(response.json())
        finally:
            if self._http is None:
                await client.aclose()
        self._keys = {
            key.key_id: key.key
            for key in key_set.keys
            if key.key_id and key.public_key_use in (None, "sig")
        }
        self._fetched_at = self._clock()
        log.info("auth.jwks.fetched", keys=len(self._keys))

    async def _tenant(self, tenant_id: str) -> TenantLimits | None:
        found, limits = self._tenants.get(tenant_id)
        if not found:
            limits = await self._store.find_tenant(tenant_id)
            self._tenants.put(tenant_id, limits)
        return limits


class Authenticator:
    """`Authorization: Bearer ...` -> Principal: `ms_` keys, else a JWT when one is configured."""

    def __init__(self, api_keys: ApiKeyAuthenticator, jwts: JwtVerifier | None) -> None:
        self.api_keys = api_keys
        self._jwts = jwts

    async def authenticate(self, authorization: str | None) -> auth.Principal:
        try:
            token = auth.bearer_token(authorization)
        except auth.AuthenticationError:
            AUTH_FAILURES.labels(kind="none", reason="missing_or_malformed").inc()
            raise
        if auth.looks_like_api_key(token):
            return await self.api_keys.authenticate(token)
        if self._jwts is None:
            AUTH_FAILURES.labels(kind="jwt", reason="not_configured").inc()
            raise auth.AuthenticationError
        return await self._jwts.authenticate(token)
