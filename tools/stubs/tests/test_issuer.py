"""The development issuer: client-credentials tokens that verify against its own JWKS."""

from pathlib import Path

import httpx
import jwt
import pytest

from mailstack_stubs.issuer import create_app, load_or_create_key

ISSUER = "http://issuer.test"


def _client(key_dir: Path) -> httpx.AsyncClient:
    app = create_app(load_or_create_key(key_dir), ISSUER, "mailstack-local")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER)


async def test_a_token_verifies_against_the_published_jwks(tmp_path: Path) -> None:
    async with _client(tmp_path) as client:
        issued = await client.post(
            "/oauth/token", data={"grant_type": "client_credentials", "client_id": "acme"}
        )
        jwks = (await client.get("/.well-known/jwks.json")).json()
        discovery = (await client.get("/.well-known/openid-configuration")).json()

    assert issued.status_code == 200
    token = issued.json()["access_token"]
    header = jwt.get_unverified_header(token)
    keys = {key.key_id: key for key in jwt.PyJWKSet.from_dict(jwks).keys}
    claims = jwt.decode(
        token,
        keys[header["kid"]].key,
        algorithms=["RS256"],
        audience="mailstack-local",
        issuer=ISSUER,
        options={"require": ["exp", "iss", "aud"]},
    )
    assert claims["tenant"] == "acme"
    assert claims["scope"] == "emails:send emails:read"
    assert discovery["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert "d" not in jwks["keys"][0]  # the private exponent is never published


async def test_refuses_any_grant_but_client_credentials(tmp_path: Path) -> None:
    async with _client(tmp_path) as client:
        response = await client.post(
            "/oauth/token", data={"grant_type": "password", "client_id": "a"}
        )
    assert response.status_code == 400


def test_the_key_survives_a_restart_and_is_private_to_its_owner(tmp_path: Path) -> None:
    first = load_or_create_key(tmp_path)
    second = load_or_create_key(tmp_path)

    assert first.kid == second.kid
    assert (tmp_path / "private.pem").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("missing", ["grant_type", "client_id"])
async def test_a_request_without_a_required_field_is_422(tmp_path: Path, missing: str) -> None:
    form = {"grant_type": "client_credentials", "client_id": "acme"}
    del form[missing]
    async with _client(tmp_path) as client:
        assert (await client.post("/oauth/token", data=form)).status_code == 422
