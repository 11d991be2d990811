"""Publishing to a real SQS queue on LocalStack."""

import uuid
from typing import Any

import pytest

from mailstack_core.messages import EmailQueuedMessage
from mailstack_gateway.queue import SqsEmailPublisher, sqs_client
from mailstack_testing.aws import localstack_clients
from mailstack_testing.waiting import eventually

pytestmark = pytest.mark.integration


def _drain(endpoint: str, queue_url: str, expected: int) -> list[str]:
    client, _ = localstack_clients(endpoint)
    bodies: list[str] = []

    def received() -> list[str]:
        response = client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        bodies.extend(message["Body"] for message in response.get("Messages", []))
        return bodies

    return eventually(
        received,
        10,
        interval=0,  # each receive long-polls for a second
        until=lambda bodies: len(bodies) >= expected,
        what=f"{expected} messages received",
    )


async def test_publishes_one_versioned_message_per_email_in_batches(
    localstack_endpoint: str, sqs_queues: Any
) -> None:
    publisher = SqsEmailPublisher(
        sqs_client(localstack_endpoint, "us-east-1"), sqs_queues.email_queue_url
    )
    ids = [uuid.uuid4() for _ in range(13)]  # more than one SQS batch of 10
    assert await publisher.publish(ids) == set()
    bodies = _drain(localstack_endpoint, sqs_queues.email_queue_url, len(ids))
    assert sorted(EmailQueuedMessage.from_json(body).email_id for body in bodies) == sorted(ids)
    await publisher.ping()


async def test_publishing_to_a_missing_queue_raises(localstack_endpoint: str) -> None:
    missing = f"{localstack_endpoint}/000000000000/mailstack-missing-{uuid.uuid4().hex[:8]}"
    publisher = SqsEmailPublisher(sqs_client(localstack_endpoint, "us-east-1"), missing)
    with pytest.raises(Exception, match=r"(?i)queue"):
        await publisher.publish([uuid.uuid4()])
