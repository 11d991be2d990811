"""The email queue (SQS) as the consumer sees it: plain boto3, run off the event loop."""

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

SQS_BATCH_LIMIT = 10


@dataclass(frozen=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


def sqs_client(endpoint_url: str | None, region: str, wait_seconds: int) -> "SQSClient":
    # A long poll holds the connection for wait_seconds: the read timeout must outlast it.
    config = Config(
        connect_timeout=3,
        read_timeout=wait_seconds + 10,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=50,
    )
    return boto3.client("sqs", endpoint_url=endpoint_url, region_name=region, config=config)


class SqsEmailQueue:
    def __init__(self, client: "SQSClient", queue_url: str, wait_seconds: int) -> None:
        self._client = client
        self._queue_url = queue_url
        self._wait_seconds = wait_seconds

    async def receive(self, max_messages: int) -> list[ReceivedMessage]:
        response = await asyncio.to_thread(
            self._client.receive_message,
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=max(1, min(max_messages, SQS_BATCH_LIMIT)),
            WaitTimeSeconds=self._wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            ReceivedMessage(
                message_id=message["MessageId"],
                receipt_handle=message["ReceiptHandle"],
                body=message.get("Body", ""),
                receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
            )
            for message in response.get("Messages", [])
        ]

    async def delete(self, message: ReceivedMessage) -> None:
        await asyncio.to_thread(
            self._client.delete_message,
            QueueUrl=self._queue_url,
            ReceiptHandle=message.receipt_handle,
        )

    async def change_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        await asyncio.to_thread(
            self._client.change_message_visibility,
            QueueUrl=self._queue_url,
            ReceiptHandle=message.receipt_handle,
            VisibilityTimeout=max(0, min(seconds, 43_200)),
        )
