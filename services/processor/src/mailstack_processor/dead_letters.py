"""Watches the dead-letter queue so that no email stays open after its message was dead-lettered.

Messages stay in the DLQ (for inspection and the DLQ-depth alarm); each is looked at again only
after `recheck_seconds`, when its email is normally final and nothing more happens.
"""

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import structlog

from mailstack_core.messages import EmailQueuedMessage, InvalidQueueMessageError
from mailstack_processor.consumer import EmailQueue, receive_unless, sleep_unless
from mailstack_processor.delivery import DeadLetterOutcome
from mailstack_processor.observability import DEAD_LETTERS

log = structlog.get_logger(__name__)

Settle = Callable[[uuid.UUID], Awaitable[DeadLetterOutcome]]
BUSY_RECHECK_SECONDS = 60


class DeadLetterWatcher:
    def __init__(
        self,
        queue: EmailQueue,
        settle: Settle,
        *,
        recheck_seconds: int,
        poll_grace_seconds: float = 0.0,
    ) -> None:
        self._queue = queue
        self._poll_grace = poll_grace_seconds
        self._settle = settle
        self._recheck = recheck_seconds

    async def run(self, stop: asyncio.Event) -> None:
        log.info("dead_letters.watching")
        while not stop.is_set():
            try:
                messages = await receive_unless(stop, self._queue, 10, self._poll_grace)
            except Exception as error:  # the DLQ unreachable: try again shortly
                log.warning("dead_letters.receive_failed", error=str(error))
                await sleep_unless(stop, 2.0)
                continue
            if messages is None:
                break
            for message in messages:
                delay = await self._look_at(message.body)
                try:
                    await self._queue.change_visibility(message, delay)
                except Exception as error:  # it shows up again after the DLQ's own timeout
                    log.warning("dead_letters.visibility_failed", error=str(error))

    async def _look_at(self, body: str) -> int:
        try:
            email_id = EmailQueuedMessage.from_json(body).email_id
        except InvalidQueueMessageError:
            DEAD_LETTERS.labels(outcome="poison").inc()
            return self._recheck
        try:
            outcome = await self._settle(email_id)
        except Exception as error:  # e.g. the database is down: look again soon
            log.warning("dead_letters.settle_failed", email_id=str(email_id), error=str(error))
            return BUSY_RECHECK_SECONDS
        DEAD_LETTERS.labels(outcome=outcome.value).inc()
        return BUSY_RECHECK_SECONDS if outcome is DeadLetterOutcome.BUSY else self._recheck
