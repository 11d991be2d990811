"""Publishing to the email queue (SQS) with plain boto3, run off the event loop."""

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from mailstack_core.queueing import TraceCarrier, publish_queued

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient


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

    async def publish(
        self,
        email_ids: Sequence[uuid.UUID],
        trace_carriers: Mapping[uuid.UUID, TraceCarrier] | None = None,
    ) -> set[uuid.UUID]:
        return await asyncio.to_thread(
            publish_queued, self._client, self._queue_url, email_ids, trace_carriers
        )

    async def ping(self) -> None:
        await asyncio.to_thread(
            self._client.get_queue_attributes,
            QueueUrl=self._queue_url,
            AttributeNames=["QueueArn"],
        )
