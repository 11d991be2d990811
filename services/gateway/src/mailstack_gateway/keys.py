"""Managing tenants and API keys: create, list, revoke.

Each operation is written once against a connection; `KeyAdmin` runs it on a synchronous
engine (`mailstack-admin`, the local stack), `AsyncKeyAdmin` on the gateway's own engine (the
admin-scope endpoints of `operations`).
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, Row, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core.tables import api_keys, tenants
from mailstack_gateway import auth

P = ParamSpec("P")
T = TypeVar("T")


class UnknownTenantError(LookupError):
    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"no tenant {tenant_id!r} (create it first, or pass --create-tenant)")
        self.tenant_id = tenant_id


class UnknownKeyError(LookupError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id {key_id!r}")
        self.key_id = key_id


@dataclass(frozen=True)
class KeyInfo:
    """Everything about a key but its secret, which is never kept."""

    key_id: str
    tenant_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


_KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.tenant_id,
    api_keys.c.name,
    api_keys.c.scopes,
    api_keys.c.created_at,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
    api_keys.c.last_used_at,
)


def _key_info(row: Row[*tuple[Any, ...]]) -> KeyInfo:
    return KeyInfo(
        key_id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        scopes=tuple(row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def ensure_tenant(
    connection: Connection,
    tenant_id: str,
    send_per_minute: int | None = None,
    read_per_minute: int | None = None,
) -> bool:
    """Create the tenant if it does not exist; True if it was created."""
    statement = (
        pg_insert(tenants)
        .values(id=tenant_id, send_per_minute=send_per_minute, read_per_minute=read_per_minute)
        .on_conflict_do_nothing()
        .returning(tenants.c.id)
    )
    return connection.execute(statement).first() is not None


def create_key(
    connection: Connection,
    tenant_id: str,
    name: str,
    scopes: Iterable[auth.Scope],
    expires_in: timedelta | None = None,
) -> tuple[KeyInfo, auth.NewApiKey]:
    """A new key for the tenant: what is kept of it, and the key to show once."""
    new = auth.generate_api_key()
    if connection.scalar(select(tenants.c.id).where(tenants.c.id == tenant_id)) is None:
        raise UnknownTenantError(tenant_id)
    row = connection.execute(
        api_keys.insert()
        .values(
            id=new.key_id,
            tenant_id=tenant_id,
            name=name,
            secret_sha256=new.secret_sha256,
            scopes=sorted(scope.value for scope in scopes),
            expires_at=(func.now() + expires_in) if expires_in is not None else None,
        )
        .returning(*_KEY_COLUMNS)
    ).one()
    return _key_info(row), new


def list_keys(connection: Connection, tenant_id: str | None = None) -> list[KeyInfo]:
    query = select(*_KEY_COLUMNS).order_by(api_keys.c.tenant_id, api_keys.c.created_at)
    if tenant_id is not None:
        query = query.where(api_keys.c.tenant_id == tenant_id)
    return [_key_info(row) for row in connection.execute(query)]


def key_is_active(connection: Connection, key_id: str) -> bool:
    """The key exists, is not revoked and has not expired."""
    query = select(api_keys.c.id).where(
        api_keys.c.id == key_id,
        api_keys.c.revoked_at.is_(None),
        (api_keys.c.expires_at.is_(None)) | (api_keys.c.expires_at > func.now()),
    )
    return connection.scalar(query) is not None


def revoke_key(connection: Connection, key_id: str) -> KeyInfo:
    """Revoke a key (again is harmless: the first revocation time is kept)."""
    found = connection.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id)
        .values(revoked_at=func.coalesce(api_keys.c.revoked_at, func.now()))
        .returning(*_KEY_COLUMNS)
    ).first()
    if found is None:
        raise UnknownKeyError(key_id)
    return _key_info(found)


class KeyAdmin:
    """The operations on a synchronous engine, each in its own transaction."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _run(
        self, operation: Callable[Concatenate[Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        with self._engine.begin() as connection:
            return operation(connection, *args, **kw)

    def ensure_tenant(
        self,
        tenant_id: str,
        send_per_minute: int | None = None,
        read_per_minute: int | None = None,
    ) -> bool:
        return self._run(ensure_tenant, tenant_id, send_per_minute, read_per_minute)

    def create_key(
        self,
        tenant_id: str,
        name: str,
        scopes: Iterable[auth.Scope],
        expires_in: timedelta | None = None,
    ) -> tuple[str, auth.NewApiKey]:
        """A new key for the tenant: (key id, the key to show once)."""
        info, new = self._run(create_key, tenant_id, name, scopes, expires_in)
        return info.key_id, new

    def list_keys(self, tenant_id: str | None = None) -> list[KeyInfo]:
        return self._run(list_keys, tenant_id)

    def key_is_active(self, key_id: str) -> bool:
        return self._run(key_is_active, key_id)

    def revoke_key(self, key_id: str) -> None:
        self._run(revoke_key, key_id)


class AsyncKeyAdmin:
    """The same operations on the gateway's async engine, each in its own transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _run(
        self, operation: Callable[Concatenate[Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        async with self._engine.begin() as connection:
            return await connection.run_sync(operation, *args, **kw)

    async def create_key(
        self,
        tenant_id: str,
        name: str,
        scopes: Iterable[auth.Scope],
        expires_in: timedelta | None = None,
        *,
        create_tenant: bool = False,
    ) -> tuple[KeyInfo, auth.NewApiKey]:
        """A new key (and its tenant first, if asked and needed), in one transaction."""

        def create(connection: Connection) -> tuple[KeyInfo, auth.NewApiKey]:
            if create_tenant:
                ensure_tenant(connection, tenant_id)
            return create_key(connection, tenant_id, name, scopes, expires_in)

        return await self._run(create)

    async def list_keys(self, tenant_id: str | None = None) -> list[KeyInfo]:
        return await self._run(list_keys, tenant_id)

    async def revoke_key(self, key_id: str) -> KeyInfo:
        return await self._run(revoke_key, key_id)
