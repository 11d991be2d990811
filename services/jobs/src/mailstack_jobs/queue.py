"""Publishing re-queued emails to the email queue (SQS) with plain boto3."""

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailstack_core.queueing import publish_queued

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient


class SqsEmailQueue:
    def __init__(self, client: "SQSClient", queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def publish(self, email_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Send one message per email, ten per call; return the ids SQS refused."""
        return publish_queued(self._client, self._queue_url, email_ids)
