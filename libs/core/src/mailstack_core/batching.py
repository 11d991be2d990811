"""Statements shared by concurrent callers: calls that arrive while a statement runs are
answered together by the next one.

Run one by one, each call pays a round trip, the statement's start and a commit (a WAL flush)
on the server. Here the first call's statement starts at once; the calls that arrive while
`writers` statements run wait for the next one, which takes what `choose` picks of them, so an
idle service adds no delay and a busy one pays per group what it paid per call. Each caller is
answered once the statement holding its item has finished. The gateway groups accepts this way
(group_commit.py), the processor its claims and SENT rows (repository.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# Runs one statement for the items; returns one answer per item, in order: a result, or the
# Exception that item's caller gets. An exception it raises is every item's answer.
Run = Callable[[Sequence[Item]], Awaitable[Sequence["Result | Exception"]]]
# Of the waiting items (oldest first; never empty), the indexes of those the next statement
# takes: at least the first.
Choose = Callable[[Sequence[Item]], Sequence[int]]


class StatementBatcher(Generic[Item, Result]):
    def __init__(self, run: Run[Item, Result], choose: Choose[Item], *, writers: int = 2) -> None:
        self._run = run
        self._choose = choose
        self._writers = writers
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        # Statements running or about to: counted down by the statement itself as it finds
        # nothing left, in the same step (a task's done callback would run a turn later, and a
        # call made in between would wait for a statement that never comes).
        self._writing = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writing < self._writers:
            self._writing += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    def _take(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        # A caller cancelled while it waited is left out.
        waiting = [entry for entry in self._pending if not entry[1].done()]
        if not waiting:
            self._pending = []
            return []
        chosen = set(self._choose([item for item, _ in waiting]))
        self._pending = [entry for index, entry in enumerate(waiting) if index not in chosen]
        return [entry for index, entry in enumerate(waiting) if index in chosen]

    async def _drain(self) -> None:
        try:
            while batch := self._take():
                await self._answer(batch)
        finally:
            self._writing -= 1

    async def _answer(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            answers = await self._run([item for item, _ in batch])
        except Exception as error:
            answers = [error] * len(batch)
        except BaseException:
            # The statement's task is cancelled (shutdown): no caller may wait for ever.
            for _, future in [*batch, *self._pending]:
                future.cancel()
            raise
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)


def distinct_keys(key: Callable[[Item], object], limit: int) -> Choose[Item]:
    """A `choose` taking up to `limit` items, oldest first, no two with the same key (the same
    email asked for twice at once goes in the next statement)."""

    def choose(items: Sequence[Item]) -> list[int]:
        chosen: list[int] = []
        seen: set[object] = set()
        for index, item in enumerate(items):
            if len(chosen) == limit:
                break
            if (item_key := key(item)) not in seen:
                seen.add(item_key)
                chosen.append(index)
        return chosen

    return choose
