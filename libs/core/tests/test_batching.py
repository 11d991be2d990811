"""StatementBatcher: calls made while statements run are answered by one statement together."""

import asyncio
from collections.abc import Sequence

import pytest

from mailstack_core.batching import StatementBatcher, distinct_keys


class Statements:
    """A statement runner that records each batch and answers once released; an item "!x"
    is refused (its caller alone gets the error)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail_next: Exception | None = None  # the next statement's error, once

    async def run(self, items: Sequence[str]) -> list[str | Exception]:
        self.batches.append(list(items))
        await self.release.wait()
        if (error := self.fail_next) is not None:
            self.fail_next = None
            raise error
        return [ValueError(item) if item.startswith("!") else f"{item}." for item in items]


def batcher(statements: Statements, writers: int = 1, limit: int = 3) -> StatementBatcher[str, str]:
    """Items "a#1" and "a#2" share the key "a"."""
    return StatementBatcher(
        statements.run, distinct_keys(lambda item: item.split("#")[0], limit), writers=writers
    )


async def started(batches: StatementBatcher[str, str], item: str) -> "asyncio.Task[str]":
    """A call whose statement has started (and waits inside the runner)."""
    task = asyncio.create_task(batches.submit(item))
    await asyncio.sleep(0)  # the call: its statement's task is created
    await asyncio.sleep(0)  # the statement: it starts and waits
    return task


async def test_a_lone_call_runs_at_once_and_later_calls_wait_for_the_next_statement() -> None:
    statements = Statements()
    batches = batcher(statements)
    first = await started(batches, "a")
    assert statements.batches == [["a"]]  # started without waiting for company
    later = [asyncio.create_task(batches.submit(item)) for item in ("b", "c", "d", "e")]
    await asyncio.sleep(0)
    assert statements.batches == [["a"]]  # one writer: the others wait for it
    statements.release.set()
    assert await asyncio.gather(first, *later) == ["a.", "b.", "c.", "d.", "e."]
    # At most `limit` per statement, in the order asked.
    assert statements.batches == [["a"], ["b", "c", "d"], ["e"]]


async def test_the_same_key_never_shares_a_statement() -> None:
    statements = Statements()
    statements.release.set()
    batches = batcher(statements)
    answers = await asyncio.gather(*(batches.submit(item) for item in ("a#1", "b", "a#2", "a#3")))
    assert answers == ["a#1.", "b.", "a#2.", "a#3."]
    assert statements.batches == [["a#1", "b"], ["a#2"], ["a#3"]]


async def test_an_item_refused_by_the_statement_fails_its_caller_only() -> None:
    statements = Statements()
    statements.release.set()
    batches = batcher(statements)
    answers = await asyncio.gather(
        *(batches.submit(item) for item in ("a", "!b", "c")), return_exceptions=True
    )
    assert answers[0] == "a."
    assert isinstance(answers[1], ValueError)
    assert answers[2] == "c."
    assert statements.batches == [["a", "!b", "c"]]


async def test_a_failed_statement_fails_its_callers_only() -> None:
    statements = Statements()
    batches = batcher(statements)
    first = await started(batches, "a")
    second = asyncio.create_task(batches.submit("b"))
    await asyncio.sleep(0)
    statements.fail_next = RuntimeError("database down")
    statements.release.set()
    with pytest.raises(RuntimeError, match="database down"):
        await first
    assert await second == "b."  # the next statement, which succeeded
    assert statements.batches == [["a"], ["b"]]


async def test_a_caller_cancelled_while_waiting_is_left_out_and_others_are_answered() -> None:
    statements = Statements()
    batches = batcher(statements)
    first = await started(batches, "a")
    cancelled = asyncio.create_task(batches.submit("b"))
    kept = asyncio.create_task(batches.submit("c"))
    await asyncio.sleep(0)
    cancelled.cancel()
    statements.release.set()
    assert await asyncio.gather(first, kept) == ["a.", "c."]
    assert statements.batches == [["a"], ["c"]]


async def test_cancelling_a_running_statement_leaves_no_caller_waiting() -> None:
    statements = Statements()
    batches = batcher(statements)
    callers = [await started(batches, "a"), asyncio.create_task(batches.submit("b"))]
    await asyncio.sleep(0)
    for task in list(batches._tasks):
        task.cancel()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in results)


async def test_a_call_made_as_the_last_statement_ends_starts_the_next_one() -> None:
    """A caller whose turn comes right after the running statement found nothing more to take,
    but before the loop ran that statement's cleanup, must not be left waiting for a statement
    that never comes (with one writer, nothing else would start one)."""

    async def run(items: Sequence[str]) -> list[str | Exception]:
        await asyncio.sleep(0)
        return [f"{item}." for item in items]

    batches: StatementBatcher[str, str] = StatementBatcher(run, distinct_keys(str, 10), writers=1)
    first = await started(batches, "a")
    # Queued behind the statement's last step: it asks once the statement found nothing left.
    late = asyncio.create_task(batches.submit("b"))
    async with asyncio.timeout(5):
        assert await asyncio.gather(first, late) == ["a.", "b."]
