"""Credentials of a local stack: the development key and stub keys `make up` writes to
stack.env, new keys for `make api-key`, and tokens from the development issuer (`make token`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine

from mailstack_core.database import normalize_database_url
from mailstack_gateway.auth import ALL_SCOPES, Scope, split_api_key
from mailstack_gateway.keys import KeyAdmin
from mailstack_stack.config import (
    ELASTICEMAIL_API_KEY,
    SENDGRID_API_KEY,
    StackConfig,
    write_atomically,
)
from mailstack_stack.profiles import PROFILE_KEY

DEV_TENANT = "dev"
# The audience the local gateway expects in the development issuer's tokens.
DEV_AUDIENCE = "mailstack-local"
SEND_AND_READ = (Scope.SEND, Scope.READ)


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
    token = key_file.read_text().strip() if key_file.is_file() else ""
    with _key_admin(database_url) as admin:
        parts = split_api_key(token)
        if parts is not None and admin.key_is_active(parts[0]):
            return token
        admin.ensure_tenant(DEV_TENANT)
        token = admin.create_key(DEV_TENANT, "make up (development, every scope)", ALL_SCOPES)[
            1
        ].token
    write_atomically(key_file, f"{token}\n", 0o600)
    return token


def stack_env(config: StackConfig, urls: Mapping[str, str]) -> dict[str, str]:
    """What stack.env holds: the stack's URLs, a development key with every scope, the keys
    the stubs accept (so an official provider SDK can be pointed at them), the profile."""
    return {
        "API_KEY": ensure_dev_key(urls["DATABASE_URL"], config.dev_key_file),
        "ELASTICEMAIL_API_KEY": ELASTICEMAIL_API_KEY,
        "SENDGRID_API_KEY": SENDGRID_API_KEY,
        **urls,
        PROFILE_KEY: config.profile,
    }


def new_tenant_key(database_url: str, tenant: str) -> str:
    """A new sending+reading key for `tenant`, created first if needed."""
    with _key_admin(database_url) as admin:
        admin.ensure_tenant(tenant)
        return admin.create_key(tenant, "make api-key", SEND_AND_READ)[1].token


def issuer_token(database_url: str, issuer_url: str, tenant: str) -> str:
    """A sending+reading JWT for `tenant` from the development issuer (client credentials)."""
    with _key_admin(database_url) as admin:
        admin.ensure_tenant(tenant)
    scope = " ".join(scope.value for scope in SEND_AND_READ)
    grant = {"grant_type": "client_credentials", "client_id": tenant, "scope": scope}
    response = httpx.post(f"{issuer_url.rstrip('/')}/oauth/token", data=grant, timeout=10)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token
