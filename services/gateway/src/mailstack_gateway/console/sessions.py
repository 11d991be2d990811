"""Console sessions kept in Postgres (`console_sessions`, migration 0009).

The browser's cookie holds a random session id (256 bits); the table keeps only its SHA-256, so
reading the table yields no cookie that works. Each row names the API key the session was opened
with: a session is found only while that key is neither revoked nor expired and still has the
read scope, so revoking the key ends every session opened with it at the next request.
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import any_, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core.tables import api_keys, console_sessions
from mailstack_gateway.auth import Scope

_SESSION_ID_BYTES = 32
_CSRF_BYTES = 32


def new_token() -> str:
    """A random token for a session id or a CSRF token (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(_SESSION_ID_BYTES)


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in browser: whose emails it sees, and the token its forms must carry."""

    tenant_id: str
    key_id: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class OpenedSession:
    session_id: str  # goes into the cookie, never into the database
    session: ConsoleSession


class SessionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def open(self, key_id: str, tenant_id: str, lifetime: timedelta) -> OpenedSession:
        """A new session for a verified key; expired sessions of every key go at the same time."""
        session_id = new_token()
        csrf_token = secrets.token_urlsafe(_CSRF_BYTES)
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(console_sessions).where(console_sessions.c.expires_at <= func.now())
            )
            expires_at = await connection.scalar(
                insert(console_sessions)
                .values(
                    id_sha256=_digest(session_id),
                    key_id=key_id,
                    tenant_id=tenant_id,
                    csrf_token=csrf_token,
                    expires_at=func.now() + lifetime,
                )
                .returning(console_sessions.c.expires_at)
            )
        return OpenedSession(session_id, ConsoleSession(tenant_id, key_id, csrf_token, expires_at))

    async def find(self, session_id: str) -> ConsoleSession | None:
        """The live session of this id: unexpired, its key unrevoked, unexpired, able to read."""
        query = (
            select(
                console_sessions.c.tenant_id,
                console_sessions.c.key_id,
                console_sessions.c.csrf_token,
                console_sessions.c.expires_at,
            )
            .join(api_keys, api_keys.c.id == console_sessions.c.key_id)
            .where(
                console_sessions.c.id_sha256 == _digest(session_id),
                console_sessions.c.expires_at > func.now(),
                api_keys.c.tenant_id == console_sessions.c.tenant_id,
                api_keys.c.revoked_at.is_(None),
                (api_keys.c.expires_at.is_(None)) | (api_keys.c.expires_at > func.now()),
                any_(api_keys.c.scopes) == Scope.READ.value,
            )
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        if row is None:
            return None
        return ConsoleSession(row.tenant_id, row.key_id, row.csrf_token, row.expires_at)

    async def close(self, session_id: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(console_sessions).where(console_sessions.c.id_sha256 == _digest(session_id))
            )
