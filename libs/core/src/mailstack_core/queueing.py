"""Publishing `EmailQueuedMessage`s to SQS in batches: what the gateway's outbox and the retry
job both do, through a boto3 SQS client."""

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailstack_core.messages import EmailQueuedMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

# The most entries SQS takes in one SendMessageBatch, DeleteMessageBatch or ReceiveMessage.
SQS_BATCH_LIMIT = 10


def publish_queued(
    client: "SQSClient", queue_url: str, email_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """One message per email, ten per call; return the ids SQS refused."""
    failed: set[uuid.UUID] = set()
    for start in range(0, len(email_ids), SQS_BATCH_LIMIT):
        chunk = email_ids[start : start + SQS_BATCH_LIMIT]
        by_entry = {str(index): email_id for index, email_id in enumerate(chunk)}
        response = client.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": entry, "MessageBody": EmailQueuedMessage(email_id=email_id).to_json()}
                for entry, email_id in by_entry.items()
            ],
        )
        failed |= {by_entry[item["Id"]] for item in response.get("Failed", [])}
    return failed
