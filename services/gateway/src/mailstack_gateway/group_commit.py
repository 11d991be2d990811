"""Group commit at intake: concurrent requests' emails written by one statement.

Under load most of an accept's cost is the statement, not its rows: the round trip, the
SQLAlchemy and psycopg layers, and Postgres's commit (a WAL flush) on the server. Requests of one
tenant that arrive while another write is under way are collected, and written together by the
next one, in one statement, atomic as before. Each request is answered once the statement that
holds its emails has committed, so a 202 means what it meant: the email is durable. With nothing
else waiting a request is written at once, alone: an idle gateway adds no delay.

Requests with an Idempotency-Key are not grouped (their claim is completed in the same
statement). When a group fails because of one request's rows (a data or integrity error), each
request of the group is written again alone, so only that request fails; any other error (the
database is down) is every request's answer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import DataError, IntegrityError

from mailstack_gateway.intake import Earlier, IdempotencyKey, IntakeStore, NewEmail

# Errors a statement raises because of what one of its rows holds.
ROW_ERRORS = (DataError, IntegrityError)


@dataclass
class _Save:
    tenant_id: str
    new_emails: Sequence[NewEmail]
    size: int
    done: asyncio.Future[None]


def _size(new_emails: Sequence[NewEmail]) -> int:
    """What a save weighs in a statement's parameters: its stored request bodies."""
    return sum(len(new.request_body) for new in new_emails)


class GroupCommit:
    """An IntakeStore that writes concurrent saves without a key together (see the module).

    At most `writers` statements run at once (each takes a pooled connection); a group holds at
    most `max_emails` emails and `max_bytes` of request bodies, except that a single larger
    request is written alone."""

    def __init__(
        self,
        store: IntakeStore,
        *,
        writers: int = 2,
        max_emails: int = 100,
        max_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._store = store
        self._writers = writers
        self._max_emails = max_emails
        self._max_bytes = max_bytes
        self._pending: list[_Save] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def claim_key(
        self, tenant_id: str, idempotency: IdempotencyKey, email_ids: Sequence[uuid.UUID]
    ) -> Earlier | None:
        return await self._store.claim_key(tenant_id, idempotency, email_ids)

    async def release_key(
        self, tenant_id: str, idempotency: IdempotencyKey, email_ids: Sequence[uuid.UUID]
    ) -> None:
        await self._store.release_key(tenant_id, idempotency, email_ids)

    async def save_batch(
        self,
        tenant_id: str,
        new_emails: Sequence[NewEmail],
        idempotency: IdempotencyKey | None = None,
    ) -> Earlier | None:
        if idempotency is not None or self._max_emails <= 1:
            return await self._store.save_batch(tenant_id, new_emails, idempotency)
        done = asyncio.get_running_loop().create_future()
        save = _Save(tenant_id, new_emails, _size(new_emails), done)
        self._pending.append(save)
        if self._running < self._writers:
            self._running += 1
            task = asyncio.create_task(self._write_pending())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # A request cancelled here (its client left) may still have its email stored: as when
        # a request is cancelled while its own statement commits.
        await save.done
        return None

    def _take(self) -> list[_Save]:
        """The oldest pending save and the next ones of its tenant, within the group's limits."""
        first = self._pending[0]
        group, emails, size = [first], len(first.new_emails), first.size
        for save in self._pending[1:]:
            if save.tenant_id != first.tenant_id:
                continue
            emails += len(save.new_emails)
            size += save.size
            if emails > self._max_emails or size > self._max_bytes:
                break
            group.append(save)
        taken = {id(save) for save in group}
        self._pending = [save for save in self._pending if id(save) not in taken]
        return group

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                await self._write(self._take())
        finally:
            self._running -= 1

    async def _write(self, group: list[_Save]) -> None:
        rows = [new for save in group for new in save.new_emails]
        try:
            await self._store.save_batch(group[0].tenant_id, rows)
        except ROW_ERRORS as error:
            if len(group) == 1:
                _answer(group[0], error)
                return
            for save in group:  # find the request whose rows the statement refused
                await self._write([save])
        except Exception as error:
            for save in group:
                _answer(save, error)
        except BaseException:  # the writer itself is cancelled (shutdown): so are its requests
            for save in group:
                save.done.cancel()
            raise
        else:
            for save in group:
                _answer(save, None)


def _answer(save: _Save, error: BaseException | None) -> None:
    if save.done.done():  # its request was cancelled
        return
    if error is None:
        save.done.set_result(None)
    else:
        save.done.set_exception(error)
