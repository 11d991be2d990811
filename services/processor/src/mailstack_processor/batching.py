"""Statements shared by concurrent deliveries: calls that arrive while others' statements run
are answered by one statement together.

A received batch starts up to ten deliveries at once, and each begins with the same statement
(its claim). Run one by one, each pays a round trip, the statement's start and a commit (a WAL
flush) on the server. Here the first call's statement starts at once; the calls that arrive
while it runs wait for the next one, which takes them all (up to `max_items`), so an idle
processor adds no delay and a busy one pays per batch what it paid per email.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class StatementBatcher(Generic[Item, Result]):
    """`run(items)` answers a batch in one statement, a result per item in order; at most
    `writers` run at once. Items with the same `key` never share a statement (the same email
    received twice at once must be claimed by one statement, then refused by the next)."""

    def __init__(
        self,
        run: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        key: Callable[[Item], Hashable],
        *,
        writers: int = 2,
        max_items: int = 10,
    ) -> None:
        self._run = run
        self._key = key
        self._writers = writers
        self._max_items = max_items
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
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        keys: set[Hashable] = set()
        left: list[tuple[Item, asyncio.Future[Result]]] = []
        for entry in self._pending:
            item, future = entry
            if future.done():  # its caller was cancelled while it waited
                continue
            key = self._key(item)
            if len(batch) < self._max_items and key not in keys:
                batch.append(entry)
                keys.add(key)
            else:
                left.append(entry)
        self._pending = left
        return batch

    async def _drain(self) -> None:
        try:
            while batch := self._take():
                await self._answer(batch)
        finally:
            self._writing -= 1

    async def _answer(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException:
            # Cancelled (the loop is shutting down): no caller may wait for ever.
            for _, future in [*batch, *self._pending]:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
