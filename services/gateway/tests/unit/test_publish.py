"""Publishing accepted emails: the inline best-effort publish and the outbox relay."""

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from mailstack_gateway import outbox
from mailstack_testing.waiting import eventually_async


def _ids(count: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(count)]


async def test_publish_marks_every_id_published_when_the_queue_takes_them(
    writer: Any, publisher: Any
) -> None:
    ids = _ids(3)

    await outbox.publish_now(ids, writer, publisher)

    assert publisher.batches == [ids]
    assert writer.published == ids


async def test_publish_marks_only_the_ids_the_queue_did_not_fail(
    writer: Any, publisher: Any
) -> None:
    ids = _ids(4)
    publisher.failing = {ids[1], ids[3]}

    await outbox.publish_now(ids, writer, publisher)

    assert writer.published == [ids[0], ids[2]]


async def test_publish_marks_nothing_when_every_id_failed(writer: Any, publisher: Any) -> None:
    ids = _ids(2)
    publisher.failing = set(ids)

    await outbox.publish_now(ids, writer, publisher)

    assert writer.published == []


async def test_publish_swallows_a_queue_error_and_leaves_the_outbox_rows(
    writer: Any, publisher: Any
) -> None:
    publisher.error = ConnectionError("SQS unreachable")

    await outbox.publish_now(_ids(2), writer, publisher)  # does not raise

    assert len(publisher.batches) == 1
    assert writer.published == []
    ((rescheduled, error),) = writer.rescheduled
    assert len(rescheduled) == 2
    assert "SQS unreachable" in error


async def test_publish_swallows_a_failure_to_mark_published(writer: Any, publisher: Any) -> None:
    writer.mark_error = ConnectionError("database gone")

    await outbox.publish_now(_ids(1), writer, publisher)  # does not raise

    assert writer.published == []


async def test_publish_skips_rows_another_publisher_holds(writer: Any, publisher: Any) -> None:
    ids = _ids(3)
    writer.locked = {ids[1]}

    await outbox.publish_now(ids, writer, publisher)

    assert publisher.batches == [[ids[0], ids[2]]]
    assert writer.published == [ids[0], ids[2]]


async def test_relay_publishes_a_due_batch_and_marks_it_published(
    make_outbox: Callable[[list[uuid.UUID]], Any], publisher: Any
) -> None:
    ids = _ids(3)
    store = make_outbox(ids)

    published = await outbox.relay_once(store, publisher)

    assert published == 3
    assert store.limits == [outbox.BATCH_SIZE]
    assert publisher.batches == [ids]
    assert store.batch.published == ids
    assert store.batch.rescheduled == []
    assert store.exited


async def test_relay_reschedules_the_ids_the_queue_failed_with_the_error(
    make_outbox: Callable[[list[uuid.UUID]], Any], publisher: Any
) -> None:
    ids = _ids(3)
    store = make_outbox(ids)
    publisher.failing = {ids[0], ids[2]}

    published = await outbox.relay_once(store, publisher)

    assert published == 1
    assert store.batch.published == [ids[1]]
    ((rescheduled, error),) = store.batch.rescheduled
    assert sorted(rescheduled) == sorted([ids[0], ids[2]])
    assert error


async def test_relay_reschedules_the_whole_batch_when_the_queue_raises(
    make_outbox: Callable[[list[uuid.UUID]], Any], publisher: Any
) -> None:
    ids = _ids(2)
    store = make_outbox(ids)
    publisher.error = ConnectionError("SQS unreachable")

    published = await outbox.relay_once(store, publisher)

    assert published == 0
    assert store.batch.published == []
    ((rescheduled, error),) = store.batch.rescheduled
    assert sorted(rescheduled) == sorted(ids)
    assert "SQS unreachable" in error


async def test_relay_does_not_call_the_queue_when_nothing_is_due(
    make_outbox: Callable[[list[uuid.UUID]], Any], publisher: Any
) -> None:
    store = make_outbox([])

    assert await outbox.relay_once(store, publisher) == 0
    assert publisher.batches == []


async def test_the_inline_publisher_batches_emails_accepted_together(
    writer: Any, publisher: Any
) -> None:
    inline = outbox.InlinePublisher(writer, publisher)
    ids = _ids(13)
    for email_id in ids:
        inline.submit(email_id)

    task = asyncio.create_task(inline.run())
    for _ in range(200):
        if len(writer.published) == len(ids):
            break
        await asyncio.sleep(0.01)
    task.cancel()

    assert writer.published == ids
    assert [len(batch) for batch in publisher.batches] == [outbox.BATCH_SIZE, 3]


async def test_the_inline_publisher_leaves_failures_to_the_relay_and_keeps_going(
    writer: Any, publisher: Any
) -> None:
    inline = outbox.InlinePublisher(writer, publisher)
    task = asyncio.create_task(inline.run())
    publisher.error = ConnectionError("SQS unreachable")
    inline.submit(uuid.uuid4())
    for _ in range(200):
        if writer.rescheduled:
            break
        await asyncio.sleep(0.01)
    publisher.error = None
    later = uuid.uuid4()
    inline.submit(later)
    for _ in range(200):
        if writer.published:
            break
        await asyncio.sleep(0.01)
    task.cancel()

    assert len(writer.rescheduled) == 1
    assert writer.published == [later]


async def test_draining_publishes_what_is_pending_before_shutdown(
    writer: Any, publisher: Any
) -> None:
    inline = outbox.InlinePublisher(writer, publisher, linger_seconds=0.5)
    task = asyncio.create_task(inline.run())
    ids = _ids(3)
    for email_id in ids:
        inline.submit(email_id)

    await inline.drain(timeout_seconds=5)
    task.cancel()

    assert writer.published == ids


async def test_draining_gives_up_after_its_timeout(writer: Any, publisher: Any) -> None:
    inline = outbox.InlinePublisher(writer, publisher)
    inline.submit(uuid.uuid4())  # no runner: nothing will ever publish it

    await asyncio.wait_for(inline.drain(timeout_seconds=0.1), timeout=2)

    assert writer.published == []


async def test_the_inline_publisher_sends_each_email_with_the_trace_of_its_request(
    writer: Any, publisher: Any
) -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    inline = outbox.InlinePublisher(writer, publisher)
    traced, untraced = _ids(2)
    with tracer.start_as_current_span("POST /v1/emails") as request:
        inline.submit(traced)
    inline.submit(untraced)

    task = asyncio.create_task(inline.run())
    await eventually_async(lambda: writer.published == [traced, untraced], 2, interval=0.01)
    task.cancel()

    trace_id = f"{request.get_span_context().trace_id:032x}"
    assert publisher.trace_carriers[traced]["traceparent"].split("-")[1] == trace_id
    assert untraced not in publisher.trace_carriers
