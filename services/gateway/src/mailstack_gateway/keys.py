"""Managing tenants and API keys: create, list, revoke (the SQL behind `mailstack-admin`)."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from mailstack_core.tables import api_keys, tenants
from mailstack_gateway import auth


class UnknownTenantError(LookupError):
    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"no tenant {tenant_id!r} (create it first, or pass --create-tenant)")


class UnknownKeyError(LookupError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id {key_id!r}")


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


class KeyAdmin:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def ensure_tenant(
        self,
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
        with self._engine.begin() as connection:
            return connection.execute(statement).first() is not None

    def create_key(
        self,
        tenant_id: str,
        name: str,
        scopes: Iterable[auth.Scope],
        expires_in: timedelta | None = None,
    ) -> tuple[str, auth.NewApiKey]:
        """A new key for the tenant: (key id, the key to show once)."""
        new = auth.generate_api_key()
        with self._engine.begin() as connection:
            if connection.scalar(select(tenants.c.id).where(tenants.c.id == tenant_id)) is None:
                raise UnknownTenantError(tenant_id)
            connection.execute(
                api_keys.insert().values(
                    id=new.key_id,
                    tenant_id=tenant_id,
                    name=name,
                    secret_sha256=new.secret_sha256,
                    scopes=sorted(scope.value for scope in scopes),
                    expires_at=(func.now() + expires_in) if expires_in is not None else None,
                )
            )
        return new.key_id, new

    def list_keys(self, tenant_id: str | None = None) -> list[KeyInfo]:
        query = select(
            api_keys.c.id,
            api_keys.c.tenant_id,
            api_keys.c.name,
            api_keys.c.scopes,
            api_keys.c.created_at,
            api_keys.c.expires_at,
            api_keys.c.revoked_at,
            api_keys.c.last_used_at,
        ).order_by(api_keys.c.tenant_id, api_keys.c.created_at)
        if tenant_id is not None:
            query = query.where(api_keys.c.tenant_id == tenant_id)
        with self._engine.connect() as connection:
            return [
                KeyInfo(
                    key_id=row.id,
                    tenant_id=row.tenant_id,
                    name=row.name,
                    scopes=tuple(row.scopes),
                    created_at=row.created_at,
                    expires_at=row.expires_at,
                    revoked_at=row.revoked_at,
                    last_used_at=row.last_used_at,
                )
                for row in connection.execute(query)
            ]

    def key_is_active(self, key_id: str) -> bool:
        """The key exists, is not revoked and has not expired."""
        query = select(api_keys.c.id).where(
            api_keys.c.id == key_id,
            api_keys.c.revoked_at.is_(None),
            (api_keys.c.expires_at.is_(None)) | (api_keys.c.expires_at > func.now()),
        )
        with self._engine.connect() as connection:
            return connection.scalar(query) is not None

    def revoke_key(self, key_id: str) -> None:
        """Revoke a key (again is harmless: the first revocation time is kept)."""
        with self._engine.begin() as connection:
            found = connection.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id)
                .values(revoked_at=func.coalesce(api_keys.c.revoked_at, func.now()))
                .returning(api_keys.c.id)
            ).first()
        if found is None:
            raise UnknownKeyError(key_id)
