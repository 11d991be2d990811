"""consumer.Consumer with a fake queue: when messages are deleted, delayed, released."""

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from mailstack_core.messages import EmailQueuedMessage
from mailstack_processor.consumer import Consumer
from mailstack_processor.delivery import Action, Disposition

POISON_BACKOFF = 7
ERROR_BACKOFF = 11


async def _until(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    """Poll a condition the consumer's side effects will make true (about `seconds` at most)."""
    step = 0.002
    for _ in range(int(seconds / step)):
        if condition():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within about {seconds} s")


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
    ) -> None:
        self.stop = asyncio.Event()
        self.consumer = Consumer(
            queue,
            deliver,
            health_check=health_check,
            max_concurrency=max_concurrency,
            poison_backoff_seconds=POISON_BACKOFF,
            error_backoff_seconds=ERROR_BACKOFF,
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
    await asyncio.sleep(0.02)

    assert queue.deleted == []  # delivery has not finished yet

    release.set()
    await _until(lambda: queue.deleted == [message.message_id])
    await harness.finish()
    assert calls == [(email_id, 3)]
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
    failing = make.message(_body(uuid.uuid4()))
    queue.put(failing)
    database_back = asyncio.Event()
    health_checks: list[float] = []
    delivered: list[uuid.UUID] = []

    async def deliver(email_id: uuid.UUID, receive_count: int) -> Disposition:
        if not delivered:
            delivered.append(email_id)
            raise OperationalError("SELECT ...", {}, ConnectionRefusedError("refused"))
        delivered.append(email_id)
        return Disposition(Action.DELETE)

    async def health_check() -> None:
        health_checks.append(asyncio.get_running_loop().time())
        await database_back.wait()

    harness = Harness(queue, deliver, health_check=health_check)
    harness.start()
    await _until(lambda: bool(health_checks))

    assert queue.visibility == [(failing.message_id, ERROR_BACKOFF)]
    assert queue.deleted == []
    later = make.message(_body(uuid.uuid4()))
    queue.put(later)
    receives = len(queue.receive_calls)
    await asyncio.sleep(0.05)
    assert len(queue.receive_calls) == receives  # paused: no receive while unhealthy
    assert len(delivered) == 1

    database_back.set()
    await _until(lambda: queue.deleted == [later.message_id])
    await harness.finish()
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
    await asyncio.sleep(0.02)
    assert harness.task is not None
    assert not harness.task.done()  # still draining the in-flight delivery
    assert queue.deleted == []

    release.set()
    await harness.finish()

    assert queue.deleted == [in_flight.message_id]
    assert sorted(queue.visibility) == sorted((m.message_id, 0) for m in late)
    assert len(calls) == 1
