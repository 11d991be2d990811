"""Credentials of a local stack: the development tenant and key `make up` writes to stack.env,
new keys for `make api-key`, and tokens from the development issuer for `make token`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine

from mailstack_core.database import normalize_database_url
from mailstack_gateway.auth import ALL_SCOPES, Scope, split_api_key
from mailstack_gateway.keys import KeyAdmin

DEV_TENANT = "dev"
# The audience the local gateway expects in the development issuer's tokens.
DEV_AUDIENCE = "mailstack-local"
DEV_KEY_NAME = "make up (development, every scope)"


@contextmanager
def _key_admin(database_url: str) -> Iterator[KeyAdmin]:
    engine = create_engine(normalize_database_url(database_url))
    try:
        yield KeyAdmin(engine)
    finally:
        engine.dispose()


def ensure_dev_key(database_url: str, key_file: Path) -> str:
    """The development key kept in `key_file` if the database still knows it (not revoked),
    else a new one with every scope for tenant `dev`, written there (owner-readable only)."""
    with _key_admin(database_url) as admin:
        if key_file.is_file():
            token = key_file.read_text().strip()
            parts = split_api_key(token)
            if parts is not None and admin.key_is_active(parts[0]):
                return token
        admin.ensure_tenant(DEV_TENANT)
        _, new = admin.create_key(DEV_TENANT, DEV_KEY_NAME, ALL_SCOPES)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = key_file.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(new.token + "\n")
    os.replace(tmp, key_file)
    return new.token


def new_tenant_key(database_url: str, tenant: str) -> str:
    """A new sending+reading key for `tenant`, created first if needed."""
    with _key_admin(database_url) as admin:
        admin.ensure_tenant(tenant)
        _, new = admin.create_key(tenant, "make api-key", (Scope.SEND, Scope.READ))
    return new.token


def issuer_token(database_url: str, issuer_url: str, tenant: str) -> str:
    """A sending+reading JWT for `tenant` from the development issuer (client credentials)."""
    with _key_admin(database_url) as admin:
        admin.ensure_tenant(tenant)
    response = httpx.post(
        f"{issuer_url.rstrip('/')}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": tenant,
            "scope": f"{Scope.SEND.value} {Scope.READ.value}",
        },
        timeout=10,
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token
