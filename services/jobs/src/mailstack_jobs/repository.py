"""All of the jobs' SQL: expired emails for the cleanup, transiently failed ones for the retry."""

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    RowMapping,
    Select,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from mailstack_core.outcomes import TRANSIENT_FINAL_OUTCOMES, Outcome
from mailstack_core.status import EmailStatus
from mailstack_core.tables import (
    email_history,
    email_outbox,
    emails,
    retention_policy,
    webhook_events,
)

# What the history trigger assumes when retention_policy has no row.
DEFAULT_HISTORY_RETENTION_DAYS = 183
RETRY_JOB = "retry-job"
# Final outcomes of emails whose providers failed transiently; a rejection is never retried.
TRANSIENT_FAILURE_OUTCOMES = tuple(outcome.value for outcome in TRANSIENT_FINAL_OUTCOMES)
OUTCOME_REQUEUED = Outcome.REQUEUED.value
OUTCOME_RETRIES_EXHAUSTED = Outcome.RETRIES_EXHAUSTED.value
# Rows fetched at a time while streaming emails (bodies may be up to a megabyte each).
STREAM_ROWS = 50

BatchKey = tuple[datetime, uuid.UUID]


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def _record(mapping: RowMapping) -> dict[str, Any]:
    return {key: _jsonable(value) for key, value in mapping.items()}


def _days(days: int) -> Any:
    return func.make_interval(0, 0, 0, days)


def _seconds(seconds: Any) -> Any:
    return func.make_interval(0, 0, 0, 0, 0, 0, seconds)


@dataclass(frozen=True)
class ExpiredEmail:
    """One email to archive: every column of its row plus its full history, JSON-ready."""

    email_id: uuid.UUID
    created_at: datetime
    record: dict[str, Any]


@dataclass
class LockedExpiredBatch:
    """Expired emails locked by this run until its transaction ends (rolled back on error)."""

    connection: Connection
    email_ids: list[uuid.UUID]
    last_key: BatchKey | None

    def emails(self) -> Iterator[ExpiredEmail]:
        """Stream the batch's emails, oldest first, each with its history in order."""
        history: dict[uuid.UUID, list[dict[str, Any]]] = {}
        rows = self.connection.execute(
            select(email_history)
            .where(email_history.c.email_id.in_(self.email_ids))
            .order_by(email_history.c.id)
        )
        for row in rows:
            history.setdefault(row.email_id, []).append(_record(row._mapping))
        result = self.connection.execute(
            select(emails)
            .where(emails.c.id.in_(self.email_ids))
            .order_by(emails.c.created_at, emails.c.id),
            execution_options={"yield_per": STREAM_ROWS},
        )
        for row in result:
            record = _record(row._mapping)
            record["history"] = history.pop(row.id, [])
            yield ExpiredEmail(email_id=row.id, created_at=row.created_at, record=record)

    def delete(self, email_ids: Sequence[uuid.UUID]) -> int:
        """Delete these emails; their history and outbox rows go with them (ON DELETE CASCADE),
        and so do their webhook events (no foreign key, so deleted here) with their attempts:
        one still waiting for a disabled endpoint would announce an email that no longer is."""
        self.connection.execute(
            delete(webhook_events).where(webhook_events.c.email_id.in_(email_ids))
        )
        result = self.connection.execute(delete(emails).where(emails.c.id.in_(email_ids)))
        return result.rowcount


class EmailCleanupStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def history_retention_days(self) -> int:
        with self._engine.connect() as connection:
            days = connection.scalar(select(retention_policy.c.history_retention_days))
        return DEFAULT_HISTORY_RETENTION_DAYS if days is None else int(days)

    def cutoff(self, retention_days: int) -> datetime:
        """The database's clock, so the history trigger (which uses now()) agrees with us."""
        with self._engine.connect() as connection:
            value = connection.scalar(select(func.now() - _days(retention_days)))
        assert isinstance(value, datetime)
        return value

    def delete_finished_webhook_events(self, cutoff: datetime, limit: int) -> int:
        """Delete up to `limit` webhook events delivered or given up before `cutoff`, with their
        attempts (ON DELETE CASCADE); events waiting or replayed (both NULL) are kept, and rows
        another transaction holds (a replay under way) are skipped."""
        finished = (
            select(webhook_events.c.id)
            .where(
                (webhook_events.c.delivered_at < cutoff) | (webhook_events.c.gave_up_at < cutoff)
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        with self._engine.begin() as connection:
            result = connection.execute(
                delete(webhook_events).where(webhook_events.c.id.in_(finished))
            )
        return result.rowcount

    @contextmanager
    def claim_expired(
        self, cutoff: datetime, limit: int, after: BatchKey | None
    ) -> Iterator[LockedExpiredBatch]:
        """Lock up to `limit` emails untouched since `cutoff` whose whole history is older too,
        and not SCHEDULED.

        Emails other runs hold are skipped; `after` continues past the previous batch's last
        (created_at, id), so a run always moves forward.
        """
        recent_history = exists().where(
            email_history.c.email_id == emails.c.id, email_history.c.at >= cutoff
        )
        query = select(emails.c.id, emails.c.created_at).where(
            emails.c.updated_at < cutoff,
            emails.c.created_at < cutoff,
            ~recent_history,
            # Waiting for its send_at (up to 30 days), which may lie past a short retention.
            emails.c.status != EmailStatus.SCHEDULED,
        )
        if after is not None:
            query = query.where(
                tuple_(emails.c.created_at, emails.c.id)
                > tuple_(literal(after[0]), literal(after[1]))
            )
        query = (
            query.order_by(emails.c.created_at, emails.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=emails)
        )
        with self._engine.begin() as connection:
            rows = connection.execute(query).all()
            last_key = (rows[-1].created_at, rows[-1].id) if rows else None
            yield LockedExpiredBatch(connection, [row.id for row in rows], last_key)


@dataclass(frozen=True)
class Requeued:
    email_id: uuid.UUID
    round: int


@dataclass(frozen=True)
class Exhausted:
    email_id: uuid.UUID
    rounds: int
    last_error: str | None


def _failed_transiently(
    conditions: Callable[[ColumnElement[int]], list[ColumnElement[bool]]],
) -> Select[Any]:
    """FAILED emails whose latest history row is a transient final failure, with the
    number of rounds this job already gave them (`conditions` filter on it); locked, skipping
    those other runs hold."""
    last = (
        select(email_history.c.detail["outcome"].astext.label("outcome"))
        .where(email_history.c.email_id == emails.c.id)
        .order_by(email_history.c.id.desc())
        .limit(1)
        .lateral("last_entry")
    )
    rounds = (
        select(func.count().label("rounds"))
        .where(
            email_history.c.email_id == emails.c.id,
            email_history.c.detail["outcome"].astext == OUTCOME_REQUEUED,
            email_history.c.detail["by"].astext == RETRY_JOB,
        )
        .lateral("previous_rounds")
    )
    return (
        select(emails.c.id, emails.c.last_error, rounds.c.rounds)
        .select_from(emails.join(last, true()).join(rounds, true()))
        .where(
            emails.c.status == EmailStatus.FAILED,
            last.c.outcome.in_(TRANSIENT_FAILURE_OUTCOMES),
            *conditions(rounds.c.rounds),
        )
        .order_by(emails.c.updated_at, emails.c.id)
        .with_for_update(skip_locked=True, of=emails)
    )


class EmailRetryStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def requeue_due(
        self, max_rounds: int, backoff_base_seconds: float, limit: int, outbox_grace_seconds: float
    ) -> list[Requeued]:
        """In one transaction: FAILED -> QUEUED, a QUEUED history row and an outbox row for each
        email whose backoff has passed, so it is durably queued before anything is published."""
        # Round n waits base * 2^(n-1) after the failure that ended the previous attempt.
        query = _failed_transiently(
            lambda rounds: [
                rounds < max_rounds,
                emails.c.updated_at
                <= func.now() - _seconds(backoff_base_seconds * func.power(2, rounds)),
            ]
        )
        with self._engine.begin() as connection:
            rows = connection.execute(query.limit(limit)).all()
            if not rows:
                return []
            requeued = [Requeued(row.id, int(row.rounds) + 1) for row in rows]
            ids = [item.email_id for item in requeued]
            connection.execute(
                update(emails)
                .where(emails.c.id.in_(ids))
                .values(status=EmailStatus.QUEUED, lease_expires_at=None, updated_at=func.now())
            )
            connection.execute(
                insert(email_history).values(
                    [
                        {
                            "email_id": item.email_id,
                            "status": EmailStatus.QUEUED,
                            "provider": None,
                            "detail": {
                                "outcome": OUTCOME_REQUEUED,
                                "round": item.round,
                                "by": RETRY_JOB,
                            },
                        }
                        for item in requeued
                    ]
                )
            )
            connection.execute(
                pg_insert(email_outbox)
                .from_select(
                    ["email_id", "next_attempt_at"],
                    select(emails.c.id, func.now() + _seconds(outbox_grace_seconds)).where(
                        emails.c.id.in_(ids)
                    ),
                )
                .on_conflict_do_nothing(index_elements=[email_outbox.c.email_id])
            )
        return requeued

    def mark_exhausted(self, max_rounds: int, limit: int) -> list[Exhausted]:
        """Record once, in the history, that an email used up its rounds; it stays FAILED."""
        query = _failed_transiently(lambda rounds: [rounds >= max_rounds]).limit(limit)
        with self._engine.begin() as connection:
            rows = connection.execute(query).all()
            if not rows:
                return []
            exhausted = [Exhausted(row.id, int(row.rounds), row.last_error) for row in rows]
            connection.execute(
                insert(email_history).values(
                    [
                        {
                            "email_id": item.email_id,
                            "status": EmailStatus.FAILED,
                            "provider": None,
                            "detail": {
                                "outcome": OUTCOME_RETRIES_EXHAUSTED,
                                "rounds": item.rounds,
                                "by": RETRY_JOB,
                            },
                        }
                        for item in exhausted
                    ]
                )
            )
        return exhausted

    def forget_published(self, email_ids: Sequence[uuid.UUID]) -> None:
        """Drop the outbox rows of emails that are on the queue now."""
        if not email_ids:
            return
        with self._engine.begin() as connection:
            connection.execute(delete(email_outbox).where(email_outbox.c.email_id.in_(email_ids)))
