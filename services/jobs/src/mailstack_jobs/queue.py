"""Publishing re-queued emails to the email queue (SQS) with plain boto3."""

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailstack_core.messages import EmailQueuedMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

SQS_BATCH_LIMIT = 10


class SqsEmailQueue:
    def __init__(self, client: "SQSClient", queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def publish(self, email_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Send one message per email, ten per call; return the ids SQS refused."""
        failed: set[uuid.UUID] = set()
        for start in range(0, len(email_ids), SQS_BATCH_LIMIT):
            chunk = email_ids[start : start + SQS_BATCH_LIMIT]
            by_entry = {str(index): email_id for index, email_id in enumerate(chunk)}
            response = self._client.send_message_batch(
                QueueUrl=self._queue_url,
                Entries=[
                    {"Id": entry, "MessageBody": EmailQueuedMessage(email_id=email_id).to_json()}
                    for entry, email_id in by_entry.items()
                ],
            )
            failed |= {by_entry[item["Id"]] for item in response.get("Failed", [])}
        return failed
