"""The due-scheduler: queues SCHEDULED emails when their `send_at` comes, through the outbox.

Every gateway instance runs it; the row locks let each due email be queued by exactly one. An
email becomes QUEUED, with its history and outbox rows, in one statement: a crash before it
leaves the email SCHEDULED for the next round, a crash after it leaves the outbox row for the
relay. So a restart neither loses nor doubles an email.
"""

import asyncio
import uuid
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

# Emails queued per statement; a round repeats while it finds this many.
BATCH_SIZE = 500
# The scheduler never polls the database more often than this.
MIN_POLL_SECONDS = 1.0


class DueEmails(Protocol):
    async def queue_due(self, limit: int) -> list[uuid.UUID]:
        """Queue the SCHEDULED emails whose `send_at` has come (history and outbox rows too);
        return their ids."""


class Submitter(Protocol):
    def submit(self, email_id: uuid.UUID) -> None:
        """Publish soon; the outbox relay publishes whatever this does not."""


async def queue_due_once(store: DueEmails, publisher: Submitter, limit: int = BATCH_SIZE) -> int:
    """One round: queue what is due and hand it to the inline publisher; return how many."""
    due = await store.queue_due(limit)
    for email_id in due:
        publisher.submit(email_id)
    if due:
        log.info("scheduler.queued", count=len(due), email_ids=[str(i) for i in due])
    return len(due)


async def run_scheduler(store: DueEmails, publisher: Submitter, poll_seconds: float) -> None:
    """Forever: queue due emails, then wait `poll_seconds` (at least a second)."""
    poll_seconds = max(poll_seconds, MIN_POLL_SECONDS)
    while True:
        try:
            while await queue_due_once(store, publisher) == BATCH_SIZE:
                pass
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("scheduler.error", error=str(error))
        await asyncio.sleep(poll_seconds)
