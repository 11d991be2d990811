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
database is down) is every request's answer. The grouping itself is
mailstack_core.batching's, which the processor's claims and outcomes share.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import DataError, IntegrityError

from mailstack_core.batching import StatementBatcher
from mailstack_gateway.intake import Earlier, IdempotencyKey, IntakeStore, NewEmail

# Errors a statement raises because of what one of its rows holds.
ROW_ERRORS = (DataError, IntegrityError)


@dataclass(frozen=True)
class _Save:
    tenant_id: str
    new_emails: Sequence[NewEmail]
    size: int


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
        self._max_emails = max_emails
        self._max_bytes = max_bytes
        self._groups: StatementBatcher[_Save, None] = StatementBatcher(
            self._write, self._group, writers=writers
        )

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
        # A request cancelled here (its client left) may still have its email stored: as when
        # a request is cancelled while its own statement commits.
        await self._groups.submit(_Save(tenant_id, new_emails, _size(new_emails)))
        return None

    def _group(self, pending: Sequence[_Save]) -> list[int]:
        """The oldest pending save and the next ones of its tenant, within the group's limits."""
        first = pending[0]
        chosen, emails, size = [0], len(first.new_emails), first.size
        for index, save in enumerate(pending[1:], start=1):
            if save.tenant_id != first.tenant_id:
                continue
            emails += len(save.new_emails)
            size += save.size
            if emails > self._max_emails or size > self._max_bytes:
                break
            chosen.append(index)
        return chosen

    async def _write(self, group: Sequence[_Save]) -> list[Exception | None]:
        rows = [new for save in group for new in save.new_emails]
        try:
            await self._store.save_batch(group[0].tenant_id, rows)
        except ROW_ERRORS as error:
            if len(group) == 1:
                return [error]
            # Find the request whose rows the statement refused: each written again alone.
            return [(await self._write([save]))[0] for save in group]
        return [None] * len(group)
