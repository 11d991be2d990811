"""The SQS consumer: long-polls, hands messages to delivery with bounded concurrency, settles them.

A message is deleted only after its outcome is committed. While the database is unreachable the
consumer stops receiving, so messages do not burn their receive count towards the DLQ.

A stop lets the long poll in progress end (polls are short: RECEIVE_WAIT_SECONDS, 3 s by
default) and releases what it returns. A poll the client walks away from is not withdrawn at
SQS: SQS still hands it the next messages, which then stay invisible for the visibility timeout
(30 s; every restart or deploy would delay up to ten emails by that much). Only a poll that
outlasts the stop's grace (`poll_grace`) is abandoned.
"""

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol

import structlog
from opentelemetry import trace

from mailstack_core.messages import EmailQueuedMessage, InvalidQueueMessageError
from mailstack_core.queueing import SQS_BATCH_LIMIT
from mailstack_core.status import EmailStatus
from mailstack_core.telemetry import EMAIL_ID_ATTRIBUTE, extract_context
from mailstack_processor.delivery import Action, Disposition
from mailstack_processor.observability import (
    DISPOSITIONS,
    HANDLING_ERRORS,
    IN_FLIGHT,
    LAST_POLL,
    MESSAGES_DROPPED,
    MESSAGES_POISON,
    MESSAGES_RECEIVED,
    QUEUE_LAG,
    RETRIES,
)
from mailstack_processor.queue import ReceivedMessage

log = structlog.get_logger(__name__)

# The longest a stop waits for the poll in progress. The rest of a stop (the sends in flight,
# closing the clients) took up to 1.2 s in `make bench`: a processor asked to stop exits
# within 5 s.
MAX_POLL_GRACE_SECONDS = 3.5


def poll_grace(receive_wait_seconds: float) -> float:
    """How long a stop waits for a poll of `receive_wait_seconds` to end by itself."""
    return min(receive_wait_seconds + 0.5, MAX_POLL_GRACE_SECONDS)


Deliver = Callable[[uuid.UUID, int], Awaitable[Disposition]]


class EmailQueue(Protocol):
    async def receive(self, max_messages: int) -> list[ReceivedMessage]: ...
    async def delete(self, message: ReceivedMessage) -> None: ...
    async def change_visibility(self, message: ReceivedMessage, seconds: int) -> None: ...


class Consumer:
    def __init__(
        self,
        queue: EmailQueue,
        deliver: Deliver,
        *,
        health_check: Callable[[], Awaitable[None]],
        max_concurrency: int,
        poison_backoff_seconds: int,
        error_backoff_seconds: int = 10,
        poll_grace_seconds: float = 0.0,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._queue = queue
        self._poll_grace = poll_grace_seconds
        self._deliver = deliver
        self._health_check = health_check
        self._max_concurrency = max_concurrency
        self._poison_backoff = poison_backoff_seconds
        self._error_backoff = error_backoff_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        # Deletes of committed outcomes waiting for their SQS batch call: not holding a slot.
        self._deleting: set[asyncio.Task[None]] = set()
        self._unhealthy = asyncio.Event()
        self._tracer = tracer or trace.get_tracer(__name__)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then finish what was started."""
        log.info("consumer.started", max_concurrency=self._max_concurrency)
        # A receive for the one slot that just freed costs as much as one for ten: wait until
        # half the slots are free, so one batch is received while the other is delivered.
        batch = min(SQS_BATCH_LIMIT, max(1, self._max_concurrency // 2))
        while not stop.is_set():
            if self._unhealthy.is_set():
                await self._wait_until_healthy(stop)
                continue
            free = self._max_concurrency - len(self._tasks)
            if free < batch:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                messages = await receive_unless(
                    stop, self._queue, min(free, SQS_BATCH_LIMIT), self._poll_grace
                )
            except Exception as error:
                log.warning("consumer.receive_failed", error=str(error))
                await sleep_unless(stop, 2.0)
                continue
            if messages is None:
                break
            LAST_POLL.set(time.time())
            MESSAGES_RECEIVED.inc(len(messages))
            QUEUE_LAG.set(queue_lag(messages, time.time()))
            if stop.is_set():
                await self._release(messages)
                break
            for message in messages:
                task = asyncio.create_task(self._handle(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if self._tasks:
            log.info("consumer.draining", in_flight=len(self._tasks))
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._deleting, return_exceptions=True)
        log.info("consumer.stopped")

    async def _release(self, messages: list[ReceivedMessage]) -> None:
        """Received but not started: make them visible again at once for another consumer."""
        results = await asyncio.gather(
            *(self._queue.change_visibility(message, 0) for message in messages),
            return_exceptions=True,
        )
        for message, result in zip(messages, results, strict=True):
            if isinstance(result, Exception):
                log.warning(
                    "consumer.release_failed", message_id=message.message_id, error=str(result)
                )

    async def _wait_until_healthy(self, stop: asyncio.Event) -> None:
        try:
            await self._health_check()
        except Exception as error:
            log.warning("consumer.paused", reason="database unreachable", error=str(error))
            await sleep_unless(stop, 2.0)
            return
        log.info("consumer.resumed")
        self._unhealthy.clear()

    async def _handle(self, message: ReceivedMessage) -> None:
        IN_FLIGHT.inc()
        try:
            await self._settle(message)
        finally:
            IN_FLIGHT.dec()

    async def _settle(self, message: ReceivedMessage) -> None:
        bound = log.bind(message_id=message.message_id, receive_count=message.receive_count)
        try:
            parsed = EmailQueuedMessage.from_json(message.body)
        except InvalidQueueMessageError as error:
            MESSAGES_POISON.inc()
            # Not deleted: the redrive policy moves it to the DLQ, where it can be inspected.
            bound.error("message.poison", error=str(error), body=message.body[:500])
            await self._visibility(message, self._poison_backoff)
            return
        with self._delivery_span(message, parsed.email_id) as span:
            try:
                disposition = await self._deliver(parsed.email_id, message.receive_count)
            except Exception as error:
                span.record_exception(error)
                span.set_status(trace.StatusCode.ERROR, type(error).__name__)
                HANDLING_ERRORS.inc()
                self._unhealthy.set()
                bound.exception(
                    "message.handling_failed", email_id=str(parsed.email_id), error=str(error)
                )
                await self._visibility(message, self._error_backoff)
                return
            span.set_attribute("mailstack.disposition", disposition.action.value)
            await self._dispose(message, disposition, bound)

    @contextlib.contextmanager
    def _delivery_span(self, message: ReceivedMessage, email_id: uuid.UUID) -> Iterator[trace.Span]:
        """The delivery's span, in the trace of the request that accepted the email (its
        context travels in the message's attributes)."""
        with self._tracer.start_as_current_span(
            "email.deliver",
            context=extract_context(message.trace_carrier),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                EMAIL_ID_ATTRIBUTE: str(email_id),
                "messaging.system": "aws_sqs",
                "messaging.message.id": message.message_id,
                "mailstack.receive_count": message.receive_count,
            },
            record_exception=False,
        ) as span:
            yield span

    async def _dispose(
        self, message: ReceivedMessage, disposition: Disposition, bound: Any
    ) -> None:
        DISPOSITIONS.labels(action=disposition.action.value).inc()
        if disposition.dropped and disposition.status is not None:
            MESSAGES_DROPPED.labels(status=disposition.status.value).inc()
        if disposition.action is Action.RETRY and disposition.status is EmailStatus.QUEUED:
            RETRIES.inc()
        if disposition.action is Action.DELETE:
            # The outcome is committed, so the slot is free: the delete waits for its batch
            # call on its own (and a stop waits for it).
            deleting = asyncio.create_task(self._delete(message, bound))
            self._deleting.add(deleting)
            deleting.add_done_callback(self._deleting.discard)
        elif disposition.action is Action.RETRY:
            await self._visibility(message, disposition.delay_seconds)
        else:
            # Visible again now; the next receive exceeds maxReceiveCount and redrives it.
            await self._visibility(message, 0)

    async def _delete(self, message: ReceivedMessage, bound: Any) -> None:
        try:
            await self._queue.delete(message)
        except Exception as error:
            bound.warning("message.delete_failed", error=str(error))

    async def _visibility(self, message: ReceivedMessage, seconds: int) -> None:
        try:
            await self._queue.change_visibility(message, seconds)
        except Exception as error:
            log.warning(
                "message.visibility_failed", message_id=message.message_id, error=str(error)
            )


def queue_lag(messages: Sequence[ReceivedMessage], now: float) -> float:
    """How long the oldest of `messages` has been in the queue (0 for none)."""
    ages = [now - message.sent_at for message in messages if message.sent_at is not None]
    return max([0.0, *ages])


async def receive_unless(
    stop: asyncio.Event, queue: EmailQueue, max_messages: int, grace_seconds: float = 0.0
) -> list[ReceivedMessage] | None:
    """One receive; when `stop` is set first, what the receive returns within `grace_seconds`
    after it (the caller releases it), else None: the poll is then abandoned.

    SQS may hand messages to an abandoned poll; they are not lost, they become visible again
    when their visibility timeout ends."""
    if stop.is_set():
        return None
    receive = asyncio.ensure_future(queue.receive(max_messages))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({receive, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not receive.done() and grace_seconds > 0:
            await asyncio.wait({receive}, timeout=grace_seconds)
    finally:
        stopping.cancel()
        # Not done: the stop came first and the poll outlasted the grace (or this coroutine
        # itself was cancelled).
        receive.cancel()
    try:
        # Done despite the stop: the caller gets, and releases, what it received.
        return await receive
    except asyncio.CancelledError:
        if (task := asyncio.current_task()) is not None and task.cancelling():
            raise  # this coroutine itself was cancelled while the poll wound down
        return None


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
