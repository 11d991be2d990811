"""The dead-letter watcher: an email whose message was dead-lettered does not stay open."""

import asyncio
import json
import uuid
from typing import Any

from mailstack_processor.dead_letters import BUSY_RECHECK_SECONDS, DeadLetterWatcher
from mailstack_processor.delivery import DeadLetterOutcome
from mailstack_testing.waiting import eventually_async

RECHECK = 3600


def _body(email_id: uuid.UUID) -> str:
    return json.dumps({"version": 1, "type": "email.queued", "email_id": str(email_id)})


async def _watch(queue: Any, outcomes: dict[uuid.UUID, Any]) -> list[uuid.UUID]:
    settled: list[uuid.UUID] = []

    async def settle(email_id: uuid.UUID) -> DeadLetterOutcome:
        settled.append(email_id)
        outcome = outcomes[email_id]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[no-any-return]

    stop = asyncio.Event()
    watcher = DeadLetterWatcher(queue, settle, recheck_seconds=RECHECK)
    task = asyncio.create_task(watcher.run(stop))
    await eventually_async(
        lambda: not queue.waiting and len(queue.visibility) >= len(outcomes),
        2,
        interval=0.01,
        what="every dead letter looked at",
    )
    stop.set()
    await asyncio.wait_for(task, 2)
    return settled


async def test_settles_each_dead_lettered_email_and_keeps_the_message(
    queue: Any, make: Any
) -> None:
    failed, final = uuid.uuid4(), uuid.uuid4()
    queue.put(make.message(_body(failed), message_id="m-failed"))
    queue.put(make.message(_body(final), message_id="m-final"))

    settled = await _watch(
        queue, {failed: DeadLetterOutcome.FAILED, final: DeadLetterOutcome.FINAL}
    )

    assert settled == [failed, final]
    assert queue.deleted == []  # the DLQ keeps them for inspection and its alarm
    assert queue.visibility == [("m-failed", RECHECK), ("m-final", RECHECK)]


async def test_looks_again_soon_at_an_email_that_is_being_delivered(queue: Any, make: Any) -> None:
    busy, broken = uuid.uuid4(), uuid.uuid4()
    queue.put(make.message(_body(busy), message_id="m-busy"))
    queue.put(make.message(_body(broken), message_id="m-broken"))

    await _watch(queue, {busy: DeadLetterOutcome.BUSY, broken: ConnectionError("db down")})

    assert queue.visibility == [
        ("m-busy", BUSY_RECHECK_SECONDS),
        ("m-broken", BUSY_RECHECK_SECONDS),
    ]


async def test_a_poison_message_is_left_alone_in_the_dlq(queue: Any, make: Any) -> None:
    queue.put(make.message("not a message", message_id="m-poison"))

    settled = await _watch(queue, {uuid.uuid4(): DeadLetterOutcome.MISSING})

    assert settled == []
    assert queue.visibility == [("m-poison", RECHECK)]
    assert queue.deleted == []


async def test_a_stop_cancels_the_watchers_long_poll(queue: Any) -> None:
    never = asyncio.Event()
    queue.hold_until = never
    stop = asyncio.Event()
    watcher = DeadLetterWatcher(queue, _never_settles, recheck_seconds=RECHECK)
    task = asyncio.create_task(watcher.run(stop))
    await eventually_async(lambda: queue.receive_calls, 2, interval=0.01, what="a long poll")
    assert queue.receive_calls == [10]

    stop.set()
    await asyncio.wait_for(task, 2)  # times out if the poll is waited out

    assert not never.is_set()


async def _never_settles(email_id: uuid.UUID) -> DeadLetterOutcome:
    raise AssertionError("nothing was received")
