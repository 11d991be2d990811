"""The consumer's view of a real SQS queue on LocalStack: receive counts, visibility, delete."""

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mailstack_core.messages import EmailQueuedMessage
from mailstack_core.queueing import publish_queued
from mailstack_processor.queue import SqsEmailQueue, sqs_client
from mailstack_testing.aws import localstack_clients
from mailstack_testing.waiting import eventually

pytestmark = pytest.mark.integration


def _max_receive_count() -> int:
    root = next(p for p in Path(__file__).resolve().parents if (p / "config").is_dir())
    settings = json.loads((root / "config" / "resources.json").read_text())
    return int(settings["email_queue"]["max_receive_count"])


@contextlib.asynccontextmanager
async def _queue(endpoint: str, queue_url: str) -> AsyncIterator[SqsEmailQueue]:
    async with sqs_client(endpoint, "us-east-1", 1) as client:
        yield SqsEmailQueue(client, queue_url, 1)


async def test_receives_with_the_receive_count_and_deletes(
    localstack_endpoint: str, sqs_queues: Any
) -> None:
    localstack_clients(localstack_endpoint)[0].send_message(
        QueueUrl=sqs_queues.email_queue_url, MessageBody="hello"
    )
    async with _queue(localstack_endpoint, sqs_queues.email_queue_url) as queue:
        [message] = await queue.receive(10)
        assert (message.body, message.receive_count) == ("hello", 1)

        await queue.change_visibility(message, 0)
        [again] = await queue.receive(10)
        assert again.receive_count == 2
        await queue.delete(again)
        assert await queue.receive(10) == []


async def test_a_message_left_visible_past_max_receives_moves_to_the_dlq(
    localstack_endpoint: str, sqs_queues: Any
) -> None:
    client, _ = localstack_clients(localstack_endpoint)
    client.send_message(QueueUrl=sqs_queues.email_queue_url, MessageBody="spent")
    max_receive_count = _max_receive_count()
    async with _queue(localstack_endpoint, sqs_queues.email_queue_url) as queue:
        for expected in range(1, max_receive_count + 1):
            [message] = await queue.receive(10)
            assert message.receive_count == expected
            await queue.change_visibility(message, 0)
        assert await queue.receive(10) == []

    def dead_letters() -> list[str]:
        response = client.receive_message(QueueUrl=sqs_queues.email_dlq_url, WaitTimeSeconds=1)
        return [m["Body"] for m in response.get("Messages", [])]

    bodies = eventually(dead_letters, 10, interval=0, what="the message in the DLQ")
    assert bodies == ["spent"]


async def test_a_published_message_arrives_with_its_trace_context_and_when_it_was_sent(
    localstack_endpoint: str, sqs_queues: Any
) -> None:
    email_id = uuid.uuid4()
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    client, _ = localstack_clients(localstack_endpoint)
    before = time.time()
    failed = publish_queued(
        client,
        sqs_queues.email_queue_url,
        [email_id],
        {email_id: {"traceparent": traceparent, "tracestate": "vendor=1"}},
    )
    assert failed == set()

    async with _queue(localstack_endpoint, sqs_queues.email_queue_url) as queue:
        [message] = await queue.receive(10)

    assert EmailQueuedMessage.from_json(message.body).email_id == email_id
    assert message.trace_carrier == {"traceparent": traceparent, "tracestate": "vendor=1"}
    assert message.sent_at is not None
    assert before - 1 <= message.sent_at <= time.time() + 1
