"""consumer.Consumer with a fake queue: when messages are deleted, delayed, released."""

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from mailstack_core.messages import EmailQueuedMessage
from mailstack_core.status import EmailStatus
from mailstack_processor.consumer import (
    MAX_POLL_GRACE_SECONDS,
    Consumer,
    poll_grace,
    receive_unless,
)
from mailstack_processor.delivery import Action, Disposition
from mailstack_processor.observability import MESSAGES_DROPPED
from mailstack_testing.waiting import eventually_async

POISON_BACKOFF = 7
ERROR_BACKOFF = 11


async def _until(condition: Callable[[], object], seconds: float = 2.0) -> None:
    """Wait for a condition the consumer's side effects will make true; fail if they do not."""
    await eventually_async(condition, seconds, interval=0.002)


async def _healthy() -> None:
    return None


class Harness:
    """Runs a Consumer over the fake queue in a background task."""

    def __init__(
        self,
        queue: Any,
        deliver: Callable[[uuid.UUID, int], Awaitable[Disposition]],
        *,
        max_concurrency: int = 4,
        health_check: Callable[[], Awaitable[None]] = _healthy,
        poll_grace_seconds: float = 0.0,
    ) -> None:
        self.stop = asyncio.Event()
        self.consumer = Consumer(
            queue,
            deliver,
            health_check=health_check,
            max_concurrency=max_concurrency,
            poison_backoff_seconds=POISON_BACKOFF,
            error_backoff_seconds=ERROR_BACKOFF,
            poll_grace_seconds=poll_grace_seconds,
        )
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.consumer.run(self.stop))

    async def finish(self) -> None:
        self.stop.set()
        assert self.task is not None
        async with asyncio.timeout(2.0):
            await self.task


def _body(email_id: uuid.UUID) -> str:
    return EmailQueuedMessage(email_id=email_id).to_json()


def _answering(disposition: Disposition) -> Any:
    calls: list[tuple[uuid.UUID, int]] = []

    async def deliver(email_id: uuid.UUID, receive_count: int) -> Disposition:
        calls.append((email_id, receive_count))
        return disposition

    deliver.calls = calls  # type: ignore[attr-defined]
    return deliver


async def test_deletes_a_message_only_after_delivery_returned_delete(make: Any, queue: Any) -> None:
    email_id = uuid.uuid4()
    message = make.message(_body(email_id), receive_count=3)
    queue.put(message)
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[tuple[uuid.UUID, int]] = []

    async def deliver(delivered_id: uuid.UUID, receive_count: int) -> Disposition:
        calls.append((delivered_id, receive_count))
        started.set()
        await release.wait()
        return Disposition(Action.DELETE)

    harness = Harness(queue, deliver)
    harness.start()
    await asyncio.wait_for(started.wait(), 2.0)
    # The consumer has gone on polling (a loop turn after handing the message over), and
    # still nothing is deleted: delivery has not finished yet.
    await _until(lambda: len(queue.receive_calls) >= 2)

    assert queue.deleted == []

    release.set()
    await _until(lambda: queue.deleted == [message.message_id])
    await harness.finish()
    assert calls == [(email_id, 3)]
    assert queue.visibility == []


async def test_deletes_and_counts_the_message_of_a_canceled_email(make: Any, queue: Any) -> None:
    message = make.message(_body(uuid.uuid4()))
    queue.put(message)
    dropped = MESSAGES_DROPPED.labels(status=EmailStatus.CANCELED.value)
    before = dropped._value.get()
    canceled = Disposition(Action.DELETE, status=EmailStatus.CANCELED, dropped=True)
    harness = Harness(queue, _answering(canceled))

    harness.start()
    await _until(lambda: queue.deleted == [message.message_id])
    await harness.finish()

    assert dropped._value.get() - before == 1
    assert queue.visibility == []


async def test_delays_a_message_by_the_retry_backoff(make: Any, queue: Any) -> None:
    message = make.message(_body(uuid.uuid4()))
    queue.put(message)
    harness = Harness(queue, _answering(Disposition(Action.RETRY, 40)))

    harness.start()
    await _until(lambda: bool(queue.visibility))
    await harness.finish()

    assert queue.visibility == [(message.message_id, 40)]
    assert queue.deleted == []


async def test_makes_a_dead_letter_message_visible_at_once_for_the_redrive(
    make: Any, queue: Any
) -> None:
    message = make.message(_body(uuid.uuid4()), receive_count=5)
    queue.put(message)
    harness = Harness(queue, _answering(Disposition(Action.DEAD_LETTER)))

    harness.start()
    await _until(lambda: bool(queue.visibility))
    await harness.finish()

    assert queue.visibility == [(message.message_id, 0)]
    assert queue.deleted == []


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "",
        json.dumps({"version": 2, "type": "email.queued", "email_id": str(uuid.uuid4())}),
        json.dumps({"version": 1, "type": "email.queued", "email_id": "not-a-uuid"}),
        json.dumps({"version": 1, "type": "email.sent", "email_id": str(uuid.uuid4())}),
    ],
    ids=["bad-json", "empty", "unknown-version", "bad-id", "unknown-type"],
)
async def test_leaves_a_poison_message_for_the_dlq_without_delivering_it(
    make: Any, queue: Any, body: str
) -> None:
    message = make.message(body)
    queue.put(message)
    deliver = _answering(Disposition(Action.DELETE))
    harness = Harness(queue, deliver)

    harness.start()
    await _until(lambda: bool(queue.visibility))
    await harness.finish()

    assert queue.visibility == [(message.message_id, POISON_BACKOFF)]
    assert queue.deleted == []
    assert deliver.calls == []


async def test_pauses_receiving_after_a_database_error_until_the_health_check_passes(
    make: Any, queue: Any
) -> None:
    failing, later = make.message(_body(uuid.uuid4())), make.message(_body(uuid.uuid4()))
    queue.put(failing, later)  # one at a time: `later` is what the next receive would take
    database_back = asyncio.Event()
    # What the consumer had done when it checked health, and when the check passed.
    at_check: list[tuple[int, list[str]]] = []
    delivered: list[uuid.UUID] = []

    async def deliver(email_id: uuid.UUID, receive_count: int) -> Disposition:
        delivered.append(email_id)
        if len(delivered) == 1:
            raise OperationalError("SELECT ...", {}, ConnectionRefusedError("refused"))
        return Disposition(Action.DELETE)

    def seen() -> tuple[int, list[str]]:
        return len(queue.receive_calls), [message.message_id for message in queue.waiting]

    async def health_check() -> None:
        at_check.append(seen())
        await database_back.wait()
        at_check.append(seen())

    harness = Harness(queue, deliver, max_concurrency=1, health_check=health_check)
    harness.start()
    await _until(lambda: at_check)

    # After the failure the consumer asked for health before receiving again.
    assert at_check == [(1, [later.message_id])]
    assert queue.visibility == [(failing.message_id, ERROR_BACKOFF)]
    assert queue.deleted == []

    database_back.set()
    await _until(lambda: queue.deleted == [later.message_id])
    await harness.finish()
    # Nothing was received while the check was pending; `later` only once it passed.
    assert at_check[1] == at_check[0]
    assert delivered[1] == EmailQueuedMessage.from_json(later.body).email_id
    assert len(delivered) == 2


async def test_never_has_more_deliveries_in_flight_than_max_concurrency(
    make: Any, queue: Any
) -> None:
    queue.put(*(make.message(_body(uuid.uuid4())) for _ in range(25)))
    in_flight = 0
    peak = 0

    async def deliver(email_id: uuid.UUID, receive_count: int) -> Disposition:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return Disposition(Action.DELETE)

    harness = Harness(queue, deliver, max_concurrency=3)
    harness.start()
    await _until(lambda: len(queue.deleted) == 25)
    await harness.finish()

    assert peak == 3
    assert max(queue.receive_calls) <= 3


async def test_asks_for_at_most_ten_messages_per_receive(make: Any, queue: Any) -> None:
    harness = Harness(queue, _answering(Disposition(Action.DELETE)), max_concurrency=50)

    harness.start()
    await _until(lambda: len(queue.receive_calls) >= 2)
    await harness.finish()

    assert max(queue.receive_calls) == 10


async def test_on_stop_finishes_in_flight_deliveries_and_releases_unstarted_messages(
    make: Any, queue: Any
) -> None:
    in_flight = make.message(_body(uuid.uuid4()))
    late = [make.message(_body(uuid.uuid4())) for _ in range(2)]
    queue.put(in_flight)
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[uuid.UUID] = []

    async def deliver(email_id: uuid.UUID, receive_count: int) -> Disposition:
        calls.append(email_id)
        started.set()
        await release.wait()
        return Disposition(Action.DELETE)

    harness = Harness(queue, deliver)
    # The next receive is a long poll that returns two messages only once stop was requested.
    queue.hold_until = harness.stop
    queue.after_hold = late
    harness.start()
    await asyncio.wait_for(started.wait(), 2.0)

    harness.stop.set()
    await _until(lambda: len(queue.visibility) == 2)
    assert harness.task is not None
    # Released what it had not started, and still waits for the delivery it had started.
    assert not harness.task.done()
    assert queue.deleted == []

    release.set()
    await harness.finish()

    assert queue.deleted == [in_flight.message_id]
    assert sorted(queue.visibility) == sorted((m.message_id, 0) for m in late)
    assert len(calls) == 1


async def test_a_stop_cancels_a_long_poll_in_progress_instead_of_waiting_it_out(
    queue: Any,
) -> None:
    never = asyncio.Event()  # a long poll that would outlast the test if it were awaited
    queue.hold_until = never
    deliver = _answering(Disposition(Action.DELETE))
    harness = Harness(queue, deliver)
    harness.start()
    await _until(lambda: len(queue.receive_calls) == 1)

    await harness.finish()  # fails if the consumer is still in the poll after 2 s

    assert not never.is_set()
    assert deliver.calls == []
    assert queue.visibility == []


async def test_a_stop_lets_the_poll_in_progress_end_and_releases_what_it_returns(
    make: Any, queue: Any
) -> None:
    # SQS would still hand an abandoned poll these messages, hidden for the visibility timeout.
    late = [make.message(_body(uuid.uuid4())) for _ in range(3)]
    answered = asyncio.Event()  # the poll ends only after the stop was requested
    queue.hold_until, queue.after_hold = answered, late
    deliver = _answering(Disposition(Action.DELETE))
    harness = Harness(queue, deliver, poll_grace_seconds=1.5)
    harness.start()
    await _until(lambda: len(queue.receive_calls) == 1)

    # The poll answers a while after the stop: a consumer abandoning it at the stop (no grace)
    # would never see these messages.
    asyncio.get_running_loop().call_later(0.2, answered.set)
    await harness.finish()

    assert sorted(queue.visibility) == sorted((m.message_id, 0) for m in late)
    assert deliver.calls == []
    assert queue.deleted == []


async def test_a_poll_outlasting_the_stops_grace_is_abandoned(queue: Any) -> None:
    never = asyncio.Event()
    queue.hold_until = never
    harness = Harness(queue, _answering(Disposition(Action.DELETE)), poll_grace_seconds=0.2)
    harness.start()
    await _until(lambda: len(queue.receive_calls) == 1)

    await harness.finish()  # fails if the consumer is still in the poll after 2 s

    assert not never.is_set()
    assert queue.visibility == []


def test_the_grace_covers_a_short_poll_and_stays_within_the_stop_budget() -> None:
    assert poll_grace(3) == 3.5
    assert poll_grace(1) == 1.5
    assert poll_grace(20) == MAX_POLL_GRACE_SECONDS <= 3.5


async def test_a_delete_waiting_for_its_batch_frees_the_slot_and_a_stop_waits_for_it(
    make: Any, queue: Any
) -> None:
    first, second = (make.message(_body(uuid.uuid4())) for _ in range(2))
    queue.put(first, second)
    batch_sent = asyncio.Event()
    queue.deletes_wait_for = batch_sent
    deliver = _answering(Disposition(Action.DELETE))
    harness = Harness(queue, deliver, max_concurrency=1)
    harness.start()

    # One slot: the second delivery runs while the first one's delete still waits.
    await _until(lambda: len(deliver.calls) == 2)
    assert queue.deleted == []

    harness.stop.set()
    await asyncio.sleep(0.05)
    assert harness.task is not None
    assert not harness.task.done()  # the stop waits for the deletes
    batch_sent.set()
    await harness.finish()

    assert sorted(queue.deleted) == sorted([first.message_id, second.message_id])


class _SlowToCancelQueue:
    """A receive that, once cancelled, takes a while to wind down (an HTTP call closing)."""

    def __init__(self) -> None:
        self.polling = asyncio.Event()
        self.winding_down = asyncio.Event()

    async def receive(self, max_messages: int) -> list[Any]:
        self.polling.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.winding_down.set()
            await asyncio.sleep(0.2)
            raise
        return []


async def test_a_receive_cancelled_while_its_abandoned_poll_winds_down_stays_cancelled() -> None:
    queue, stop = _SlowToCancelQueue(), asyncio.Event()
    receiving = asyncio.create_task(receive_unless(stop, queue, 10))  # type: ignore[arg-type]
    await queue.polling.wait()
    stop.set()  # no grace: the poll is abandoned, and winds down for 0.2 s
    await queue.winding_down.wait()

    receiving.cancel()  # e.g. the service's shutdown cancelling the consumer

    with pytest.raises(asyncio.CancelledError):
        await receiving
