"""The email queue (SQS) as the consumer sees it: one aiobotocore client, on the event loop.

Deletes and visibility changes of concurrent deliveries share SQS batch calls (10 entries at
most), each caller still waiting for, and told about, its own entry. A receive is a coroutine,
so a stop can cancel a long poll instead of waiting it out.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from mailstack_core.queueing import SQS_BATCH_LIMIT, TRACE_ATTRIBUTES

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient
    from types_aiobotocore_sqs.type_defs import BatchResultErrorEntryTypeDef

# Long enough for the deliveries of one receive, and of the next, to share a call (a delete no
# longer holds its delivery's slot while it waits); short against the visibility timeout.
FLUSH_SECONDS = 0.05


@dataclass(frozen=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    # When SQS first took the message (Unix seconds), and the trace context it carries.
    sent_at: float | None = None
    trace_carrier: Mapping[str, str] = field(default_factory=dict)


class SqsBatchEntryError(Exception):
    """SQS refused one entry of a batch call (e.g. ReceiptHandleIsInvalid)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def sqs_client(
    endpoint_url: str | None, region: str, wait_seconds: int
) -> contextlib.AbstractAsyncContextManager["SQSClient"]:
    """An SQS client to open with `async with` (it owns a connection pool)."""
    # A long poll holds the connection for wait_seconds: the read timeout must outlast it.
    config = AioConfig(
        connect_timeout=3,
        read_timeout=wait_seconds + 10,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=50,
    )
    return get_session().create_client(
        "sqs", endpoint_url=endpoint_url, region_name=region, config=config
    )


Entry = dict[str, Any]
SendBatch = Callable[[list[Entry]], Awaitable[Sequence["BatchResultErrorEntryTypeDef"]]]


class EntryBatcher:
    """Gathers entries submitted within `flush_seconds` (or 10 of them) into one batch call."""

    def __init__(self, send: SendBatch, flush_seconds: float = FLUSH_SECONDS) -> None:
        self._send = send
        self._flush_seconds = flush_seconds
        self._pending: list[tuple[Entry, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._calls: set[asyncio.Task[None]] = set()

    async def submit(self, entry: Entry) -> None:
        """Returns once SQS accepted this entry; raises if the call or this entry failed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((entry, future))
        if len(self._pending) >= SQS_BATCH_LIMIT:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._flush_seconds, self._flush)
        await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            batch = self._pending[:SQS_BATCH_LIMIT]
            self._pending = self._pending[SQS_BATCH_LIMIT:]
            call = asyncio.create_task(self._call(batch))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _call(self, batch: list[tuple[Entry, asyncio.Future[None]]]) -> None:
        entries = [{**entry, "Id": str(index)} for index, (entry, _) in enumerate(batch)]
        try:
            failed = await self._send(entries)
        except Exception as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        errors = {item["Id"]: item for item in failed}
        for index, (_, future) in enumerate(batch):
            if future.done():  # its caller was cancelled
                continue
            error_entry = errors.get(str(index))
            if error_entry is None:
                future.set_result(None)
            else:
                future.set_exception(
                    SqsBatchEntryError(error_entry["Code"], error_entry.get("Message", ""))
                )


def _received(message: Any) -> ReceivedMessage:
    system = message.get("Attributes", {})
    sent_ms = system.get("SentTimestamp")
    return ReceivedMessage(
        message_id=message["MessageId"],
        receipt_handle=message["ReceiptHandle"],
        body=message.get("Body", ""),
        receive_count=int(system.get("ApproximateReceiveCount", 1)),
        sent_at=int(sent_ms) / 1000 if sent_ms else None,
        trace_carrier={
            name: value["StringValue"]
            for name, value in message.get("MessageAttributes", {}).items()
            if name in TRACE_ATTRIBUTES and "StringValue" in value
        },
    )


class SqsEmailQueue:
    def __init__(
        self,
        client: "SQSClient",
        queue_url: str,
        wait_seconds: int,
        *,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._wait_seconds = wait_seconds
        self._deletes = EntryBatcher(self._delete_batch, flush_seconds)
        self._visibility = EntryBatcher(self._visibility_batch, flush_seconds)

    async def receive(self, max_messages: int) -> list[ReceivedMessage]:
        response = await self._client.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=max(1, min(max_messages, SQS_BATCH_LIMIT)),
            WaitTimeSeconds=self._wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            MessageAttributeNames=list(TRACE_ATTRIBUTES),
        )
        return [_received(message) for message in response.get("Messages", [])]

    async def delete(self, message: ReceivedMessage) -> None:
        await self._deletes.submit({"ReceiptHandle": message.receipt_handle})

    async def change_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        await self._visibility.submit(
            {
                "ReceiptHandle": message.receipt_handle,
                "VisibilityTimeout": max(0, min(seconds, 43_200)),
            }
        )

    async def _delete_batch(self, entries: list[Entry]) -> Sequence["BatchResultErrorEntryTypeDef"]:
        response = await self._client.delete_message_batch(
            QueueUrl=self._queue_url,
            Entries=[{"Id": e["Id"], "ReceiptHandle": e["ReceiptHandle"]} for e in entries],
        )
        return response.get("Failed", [])

    async def _visibility_batch(
        self, entries: list[Entry]
    ) -> Sequence["BatchResultErrorEntryTypeDef"]:
        response = await self._client.change_message_visibility_batch(
            QueueUrl=self._queue_url,
            Entries=[
                {
                    "Id": e["Id"],
                    "ReceiptHandle": e["ReceiptHandle"],
                    "VisibilityTimeout": e["VisibilityTimeout"],
                }
                for e in entries
            ],
        )
        return response.get("Failed", [])
