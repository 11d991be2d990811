"""API keys and JWT bearer tokens: what is accepted, and everything that must be refused."""

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailstack_gateway import auth
from mailstack_gateway.credentials import (
    ApiKeyAuthenticator,
    Authenticator,
    JwtSettings,
    JwtVerifier,
    TenantLimits,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ISSUER = "https://idp.example.com/"
AUDIENCE = "mailstack"


class FakeStore:
    """CredentialStore over dicts, counting lookups."""

    def __init__(self) -> None:
        self.keys: dict[str, auth.StoredKey] = {}
        self.tenants: dict[str, TenantLimits] = {"acme": TenantLimits(None, None)}
        self.key_lookups = 0
        self.flushed: list[dict[str, datetime]] = []

    async def find_key(self, key_id: str) -> auth.StoredKey | None:
        self.key_lookups += 1
        return self.keys.get(key_id)

    async def find_tenant(self, tenant_id: str) -> TenantLimits | None:
        return self.tenants.get(tenant_id)

    async def record_last_used(self, used: dict[str, datetime]) -> None:
        self.flushed.append(dict(used))


def _stored(new: auth.NewApiKey, **overrides: Any) -> auth.StoredKey:
    values: dict[str, Any] = {
        "key_id": new.key_id,
        "tenant_id": "acme",
        "secret_sha256": new.secret_sha256,
        "scopes": frozenset({"emails:send", "emails:read"}),
        "expires_at": None,
        "revoked_at": None,
        "send_per_minute": 5,
        "read_per_minute": None,
    }
    return auth.StoredKey(**(values | overrides))


# -- API keys ---------------------------------------------------------------------------------


def test_a_new_key_is_prefixed_random_and_kept_only_as_a_hash() -> None:
    first, second = auth.generate_api_key(), auth.generate_api_key()

    assert first.token.startswith("ms_")
    assert first.token != second.token
    key_id, secret = auth.split_api_key(first.token) or ("", "")
    assert key_id == first.key_id
    assert len(base64.urlsafe_b64decode(secret + "=")) * 8 >= 128
    assert first.secret_sha256 == auth.hash_secret(secret)
    assert secret.encode() not in first.secret_sha256


def test_a_valid_key_yields_its_tenant_scopes_and_limits() -> None:
    new = auth.generate_api_key()

    principal = auth.verify_api_key(new.token, _stored(new), NOW)

    assert principal.tenant_id == "acme"
    assert principal.scopes == {auth.Scope.SEND, auth.Scope.READ}
    assert principal.send_per_minute == 5
    assert principal.credential_id == f"key:{new.key_id}"


@pytest.mark.parametrize(
    "case", ["unknown", "revoked", "expired", "wrong secret", "malformed", "other key's id"]
)
def test_every_bad_key_gets_the_same_authentication_error(case: str) -> None:
    new = auth.generate_api_key()
    token, stored = new.token, _stored(new)
    if case == "unknown":
        stored = None
    elif case == "revoked":
        stored = _stored(new, revoked_at=NOW - timedelta(seconds=1))
    elif case == "expired":
        stored = _stored(new, expires_at=NOW)
    elif case == "wrong secret":
        token = new.token[:-4] + ("AAAA" if not new.token.endswith("AAAA") else "BBBB")
    elif case == "malformed":
        token = new.token + "x"
    else:
        stored = _stored(new, key_id="0" * 16)

    with pytest.raises(auth.AuthenticationError) as raised:
        auth.verify_api_key(token, stored, NOW)
    assert str(raised.value) == "missing or invalid credentials"


def test_a_key_expiring_later_is_still_valid() -> None:
    new = auth.generate_api_key()
    stored = _stored(new, expires_at=NOW + timedelta(minutes=1))
    assert auth.verify_api_key(new.token, stored, NOW).tenant_id == "acme"


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer abc", "abc"), ("BEARER  abc ", "abc")],
)
def test_reads_a_bearer_token_whatever_the_scheme_case(header: str, token: str) -> None:
    assert auth.bearer_token(header) == token


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic abc", "Bearer a b", "abc"])
def test_refuses_a_header_that_is_not_one_bearer_token(header: str | None) -> None:
    with pytest.raises(auth.AuthenticationError):
        auth.bearer_token(header)


async def test_keys_are_cached_and_last_use_is_written_in_one_batch() -> None:
    store = FakeStore()
    new = auth.generate_api_key()
    store.keys[new.key_id] = _stored(new)
    clock = [0.0]
    authenticator = ApiKeyAuthenticator(store, cache_seconds=10, clock=lambda: clock[0])  # type: ignore[arg-type]

    for _ in range(5):
        await authenticator.authenticate(new.token)
    assert store.key_lookups == 1
    assert store.flushed == []

    await authenticator.flush_last_used()
    assert list(store.flushed[0]) == [new.key_id]

    # A revocation is seen once the cached entry expires.
    store.keys[new.key_id] = _stored(new, revoked_at=datetime.now(UTC))
    clock[0] = 11.0
    with pytest.raises(auth.AuthenticationError):
        await authenticator.authenticate(new.token)
    assert store.key_lookups == 2


# -- JWTs -------------------------------------------------------------------------------------


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


SIGNING_KEY = _rsa()
OTHER_KEY = _rsa()
PUBLIC_PEM = (
    SIGNING_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def _jwks(*keys: tuple[str, rsa.RSAPrivateKey]) -> dict[str, Any]:
    entries = []
    for kid, key in keys:
        entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        entries.append(entry | {"kid": kid, "use": "sig", "alg": "RS256"})
    return {"keys": entries}


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "client-1",
        "tenant": "acme",
        "scope": "emails:send emails:read",
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _token(claims: dict[str, Any] | None = None, kid: str = "k1", **kwargs: Any) -> str:
    key = kwargs.pop("key", SIGNING_KEY)
    algorithm = kwargs.pop("algorithm", "RS256")
    return jwt.encode(claims or _claims(), key, algorithm=algorithm, headers={"kid": kid})


class Jwks:
    """A JWKS endpoint behind httpx.MockTransport, counting fetches."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.fetches = 0

    def client(self) -> httpx.AsyncClient:
        def handle(request: httpx.Request) -> httpx.Response:
            self.fetches += 1
            return httpx.Response(200, json=self.document)

        return httpx.AsyncClient(transport=httpx.MockTransport(handle))


def _verifier(jwks: Jwks, clock: list[float] | None = None) -> JwtVerifier:
    settings = JwtSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=["RS256"],
        jwks_url="https://idp.example.com/jwks.json",
    )
    ticks = clock or [0.0]
    return JwtVerifier(settings, FakeStore(), jwks.client(), clock=lambda: ticks[0])  # type: ignore[arg-type]


async def test_a_valid_token_yields_its_tenant_and_scopes() -> None:
    principal = await _verifier(Jwks(_jwks(("k1", SIGNING_KEY)))).authenticate(_token())

    assert principal.tenant_id == "acme"
    assert principal.scopes == {auth.Scope.SEND, auth.Scope.READ}
    assert principal.credential_id == "jwt:client-1"


def _none_token() -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'kid': 'k1'})}.{part(_claims())}."


def _hs256_with_the_public_key() -> str:
    # Algorithm confusion: sign with HMAC, using the public key's bytes as the secret.
    header = {"alg": "HS256", "kid": "k1", "typ": "JWT"}

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).decode().rstrip("=")

    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(_claims()).encode())}"
    signature = hmac.new(PUBLIC_PEM.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(signature)}"


def _tampered() -> str:
    header, _, signature = _token().split(".")
    forged = base64.urlsafe_b64encode(json.dumps(_claims(tenant="globex")).encode())
    return f"{header}.{forged.decode().rstrip('=')}.{signature}"


BAD_TOKENS = {
    "expired": lambda: _token(_claims(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)),
    "alg none": _none_token,
    "wrong audience": lambda: _token(_claims(aud="someone-else")),
    "wrong issuer": lambda: _token(_claims(iss="https://evil.example.com/")),
    "HS256 signed with the public key": _hs256_with_the_public_key,
    "unknown kid": lambda: _token(kid="k9"),
    "tampered payload": _tampered,
    "signed by another key": lambda: _token(key=OTHER_KEY),
    "no exp": lambda: _token(_claims(exp=None)),
    "no aud": lambda: _token(_claims(aud=None)),
    "no iss": lambda: _token(_claims(iss=None)),
    "no tenant": lambda: _token(_claims(tenant=None)),
    "unknown tenant": lambda: _token(_claims(tenant="nobody")),
    "not a jwt": lambda: "not-a-jwt",
}


@pytest.mark.parametrize("case", BAD_TOKENS)
async def test_a_bad_token_is_401_through_the_authenticator(case: str) -> None:
    jwts = _verifier(Jwks(_jwks(("k1", SIGNING_KEY))))
    authenticator = Authenticator(ApiKeyAuthenticator(FakeStore(), 10), jwts)  # type: ignore[arg-type]

    with pytest.raises(auth.AuthenticationError):
        await authenticator.authenticate(f"Bearer {BAD_TOKENS[case]()}")


async def test_an_unknown_kid_refetches_the_jwks_at_most_once() -> None:
    jwks = Jwks(_jwks(("k1", SIGNING_KEY)))
    verifier = _verifier(jwks)

    await verifier.authenticate(_token())
    for _ in range(5):
        with pytest.raises(auth.AuthenticationError):
            await verifier.authenticate(_token(kid="k9"))

    assert jwks.fetches == 2  # the first fetch, then one refetch for k9


async def test_a_rotated_key_is_picked_up_by_its_refetch() -> None:
    jwks = Jwks(_jwks(("k1", SIGNING_KEY)))
    verifier = _verifier(jwks)
    await verifier.authenticate(_token())

    jwks.document = _jwks(("k1", SIGNING_KEY), ("k2", OTHER_KEY))
    principal = await verifier.authenticate(_token(kid="k2", key=OTHER_KEY))

    assert principal.tenant_id == "acme"
    assert jwks.fetches == 2


async def test_the_jwks_is_fetched_again_when_the_cache_expires() -> None:
    jwks = Jwks(_jwks(("k1", SIGNING_KEY)))
    clock = [0.0]
    verifier = _verifier(jwks, clock)
    await verifier.authenticate(_token())
    await verifier.authenticate(_token())
    assert jwks.fetches == 1

    clock[0] = 301.0
    await verifier.authenticate(_token())
    assert jwks.fetches == 2


async def test_a_configured_public_key_verifies_without_any_jwks() -> None:
    settings = JwtSettings(
        issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"], public_key=PUBLIC_PEM
    )
    verifier = JwtVerifier(settings, FakeStore())  # type: ignore[arg-type]

    assert (await verifier.authenticate(_token())).tenant_id == "acme"
    with pytest.raises(auth.AuthenticationError):
        await verifier.authenticate(_hs256_with_the_public_key())


@pytest.mark.parametrize("algorithms", [["HS256"], ["RS256", "none"], []])
def test_refuses_to_be_configured_with_symmetric_or_no_algorithms(algorithms: list[str]) -> None:
    settings = JwtSettings(
        issuer=ISSUER, audience=AUDIENCE, algorithms=algorithms, public_key=PUBLIC_PEM
    )
    with pytest.raises(ValueError, match="asymmetric"):
        JwtVerifier(settings, FakeStore())  # type: ignore[arg-type]


async def test_without_a_configured_issuer_a_jwt_is_refused() -> None:
    authenticator = Authenticator(ApiKeyAuthenticator(FakeStore(), 10), None)  # type: ignore[arg-type]
    with pytest.raises(auth.AuthenticationError):
        await authenticator.authenticate(f"Bearer {_token()}")
