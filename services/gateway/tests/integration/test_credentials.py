"""API keys on the real Postgres: the admin command, lookups, revocation, last use, isolation."""

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import create_async_engine

from mailstack_core.database import normalize_database_url
from mailstack_core.tables import api_keys, emails
from mailstack_gateway.auth import Scope
from mailstack_gateway.credentials import ApiKeyAuthenticator, CredentialStore
from mailstack_gateway.keys import KeyAdmin, UnknownKeyError, UnknownTenantError
from mailstack_gateway.main import create_app
from mailstack_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

EMAIL = {
    "from": {"email": "app@example.com"},
    "to": [{"email": "user@example.com"}],
    "subject": "Hello",
    "text": "Hi",
}


@pytest.fixture
def admin(sync_engine: Engine) -> KeyAdmin:
    return KeyAdmin(sync_engine)


def _admin_command(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailstack_gateway.admin", *args],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_admin_command_creates_lists_and_revokes_keys(
    database_url: str, sync_engine: Engine
) -> None:
    created = _admin_command(
        database_url, "keys", "create", "--tenant", "acme", "--create-tenant", "--name", "ci"
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[-1]
    assert token.startswith("ms_")
    key_id = token.split("_")[1]

    listed = _admin_command(database_url, "keys", "list", "--tenant", "acme")
    assert listed.returncode == 0, listed.stderr
    assert key_id in listed.stdout
    assert "emails:read,emails:send" in listed.stdout
    secret = token.split("_", 2)[2]
    assert secret not in listed.stdout

    with sync_engine.connect() as connection:
        stored = connection.execute(select(api_keys).where(api_keys.c.id == key_id)).one()
    assert secret.encode() not in bytes(stored.secret_sha256)
    assert token not in repr(tuple(stored))

    revoked = _admin_command(database_url, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    with sync_engine.connect() as connection:
        assert connection.scalar(select(api_keys.c.revoked_at)) is not None


def test_the_admin_command_refuses_an_unknown_tenant_or_key(database_url: str) -> None:
    no_tenant = _admin_command(database_url, "keys", "create", "--tenant", "nobody")
    assert no_tenant.returncode == 2
    assert "no tenant 'nobody'" in no_tenant.stderr
    no_key = _admin_command(database_url, "keys", "revoke", "0123456789abcdef")
    assert no_key.returncode == 2
    assert "no API key" in no_key.stderr


def test_revoking_an_unknown_key_or_creating_for_an_unknown_tenant_raises(admin: KeyAdmin) -> None:
    with pytest.raises(UnknownTenantError):
        admin.create_key("nobody", "k", [Scope.SEND])
    with pytest.raises(UnknownKeyError):
        admin.revoke_key("0123456789abcdef")


async def test_last_use_is_written_by_the_flush_and_never_per_request(
    database_url: str, admin: KeyAdmin, sync_engine: Engine
) -> None:
    admin.ensure_tenant("acme")
    _, new = admin.create_key("acme", "k", [Scope.SEND])
    engine = create_async_engine(normalize_database_url(database_url))
    try:
        authenticator = ApiKeyAuthenticator(CredentialStore(engine), cache_seconds=0)
        principal = await authenticator.authenticate(new.token)
        assert principal.tenant_id == "acme"
        with sync_engine.connect() as connection:
            assert connection.scalar(select(api_keys.c.last_used_at)) is None
        await authenticator.flush_last_used()
        with sync_engine.connect() as connection:
            assert connection.scalar(select(api_keys.c.last_used_at)) is not None
    finally:
        await engine.dispose()


@pytest.fixture
async def gateway(database_url: str, sqs_queues: object) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(
        database_url=database_url,
        email_queue_url=sqs_queues.email_queue_url,  # type: ignore[attr-defined]
        attachments_bucket=sqs_queues.attachments_bucket,  # type: ignore[attr-defined]
        aws_endpoint_url="http://127.0.0.1:9",  # publishing is not what these tests check
        auth_cache_seconds=0,
        outbox_grace_seconds=60,
    )
    app = create_app(settings, run_relay=False)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway") as client,
    ):
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_keys_work_at_once_and_stop_at_revocation_or_expiry(
    gateway: httpx.AsyncClient, admin: KeyAdmin
) -> None:
    admin.ensure_tenant("acme")
    key_id, key = admin.create_key("acme", "live", [Scope.SEND, Scope.READ])
    _, expired = admin.create_key("acme", "old", [Scope.SEND], expires_in=timedelta(seconds=-1))

    assert (
        await gateway.post("/v1/emails", json=EMAIL, headers=_bearer(key.token))
    ).status_code == 202
    refused = await gateway.post("/v1/emails", json=EMAIL, headers=_bearer(expired.token))
    admin.revoke_key(key_id)
    after_revoke = await gateway.post("/v1/emails", json=EMAIL, headers=_bearer(key.token))
    unknown = await gateway.post(
        "/v1/emails", json=EMAIL, headers=_bearer(f"ms_{'0' * 16}_{'A' * 43}")
    )

    # Unknown, revoked and expired keys get the very same answer.
    assert {r.status_code for r in (refused, after_revoke, unknown)} == {401}
    assert refused.json() == after_revoke.json() == unknown.json()
    assert refused.headers["www-authenticate"] == after_revoke.headers["www-authenticate"]


async def test_tenants_never_see_each_others_emails_through_the_api(
    gateway: httpx.AsyncClient, admin: KeyAdmin, sync_engine: Engine
) -> None:
    admin.ensure_tenant("acme")
    admin.ensure_tenant("globex")
    _, acme = admin.create_key("acme", "a", [Scope.SEND, Scope.READ])
    _, globex = admin.create_key("globex", "g", [Scope.SEND, Scope.READ])

    accepted = await gateway.post("/v1/emails", json=EMAIL, headers=_bearer(acme.token))
    email_id = accepted.json()["id"]

    assert (
        await gateway.get(f"/v1/emails/{email_id}", headers=_bearer(acme.token))
    ).status_code == 200
    for path in (f"/v1/emails/{email_id}", f"/v1/emails/{email_id}/history"):
        assert (await gateway.get(path, headers=_bearer(globex.token))).status_code == 404
    listed = await gateway.get("/v1/emails", headers=_bearer(globex.token))
    assert listed.json()["items"] == []
    with sync_engine.connect() as connection:
        owner = connection.scalar(
            select(emails.c.tenant_id).where(emails.c.id == uuid.UUID(email_id))
        )
    assert owner == "acme"


async def test_the_stored_request_holds_the_body_and_never_the_credential(
    gateway: httpx.AsyncClient, admin: KeyAdmin, sync_engine: Engine
) -> None:
    admin.ensure_tenant("acme")
    _, key = admin.create_key("acme", "a", [Scope.SEND])

    await gateway.post("/v1/emails", json=EMAIL, headers=_bearer(key.token))

    with sync_engine.connect() as connection:
        stored = connection.scalar(select(emails.c.request_body))
    assert stored is not None
    assert '"subject"' in stored
    assert key.token not in stored
    assert "Bearer" not in stored
