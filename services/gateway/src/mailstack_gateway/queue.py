"""Publishing to the email queue (SQS) with plain boto3, run off the event loop."""

import asyncio
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from mailstack_core.messages import EmailQueuedMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

SQS_BATCH_LIMIT = 10


def sqs_client(endpoint_url: str | None, region: str) -> "SQSClient":
    """Short timeouts and few retries: a slow queue must not hold requests (the relay retries)."""
    config = Config(
        connect_timeout=2,
        read_timeout=5,
        retries={"max_attempts": 2, "mode": "standard"},
    )
    return boto3.client("sqs", endpoint_url=endpoint_url, region_name=region, config=config)


class SqsEmailPublisher:
    def __init__(self, client: "SQSClient", queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    async def publish(self, email_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        failed: set[uuid.UUID] = set()
        for start in range(0, len(email_ids), SQS_BATCH_LIMIT):
            chunk = email_ids[start : start + SQS_BATCH_LIMIT]
            failed |= await asyncio.to_thread(self._send_batch, chunk)
        return failed

    def _send_batch(self, email_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        by_entry = {str(index): email_id for index, email_id in enumerate(email_ids)}
        response = self._client.send_message_batch(
            QueueUrl=self._queue_url,
            Entries=[
                {"Id": entry, "MessageBody": EmailQueuedMessage(email_id=email_id).to_json()}
                for entry, email_id in by_entry.items()
            ],
        )
        return {by_entry[item["Id"]] for item in response.get("Failed", [])}

    async def ping(self) -> None:
        await asyncio.to_thread(
            self._client.get_queue_attributes,
            QueueUrl=self._queue_url,
            AttributeNames=["QueueArn"],
        )
