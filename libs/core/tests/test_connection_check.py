"""The pool's check on checkout (no round trip): a connection the server closed while it was idle
is replaced before it is handed out, on the real Postgres."""

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from mailstack_core.database import check_on_checkout, normalize_database_url
from mailstack_testing.waiting import eventually_async

pytestmark = pytest.mark.integration


async def test_a_connection_whose_backend_was_terminated_is_replaced_not_used(
    database_url: str,
) -> None:
    engine = check_on_checkout(
        create_async_engine(normalize_database_url(database_url), pool_size=1, max_overflow=0)
    )
    admin = create_async_engine(normalize_database_url(database_url))
    try:
        async with engine.connect() as connection:
            first_pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with admin.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid})
            await other.commit()

            async def gone() -> bool:
                found = await other.execute(
                    text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": first_pid}
                )
                await other.commit()
                return found.first() is None

            await eventually_async(gone, 10, what="the terminated backend gone")

        # The pooled connection is dead; without the check this statement would fail.
        async with engine.connect() as connection:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert pid != first_pid
    finally:
        await engine.dispose()
        await admin.dispose()
