"""The dead-letter queue back to the email queue: SQS's own message move task, run off the loop.

SQS moves the messages itself, in the background and at a bounded rate; the gateway only starts
the task and reads its progress (ListMessageMoveTasks keeps the ten most recent). A moved
message is an ordinary queue message again: the processor claims its email as for any other.
"""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

RUNNING = "RUNNING"


class QueueUnavailableError(Exception):
    def __init__(self, action: str, error: Exception) -> None:
        super().__init__(f"the queue did not answer {action}: {error}")


class RedriveRunningError(Exception):
    def __init__(self) -> None:
        super().__init__("a redrive of the dead-letter queue is running already; wait for it")


@dataclass(frozen=True)
class MoveTask:
    """One redrive: `messages_to_move` as counted when it started, `messages_moved` so far."""

    status: str  # RUNNING, COMPLETED, CANCELLING, CANCELLED or FAILED (SQS's words)
    started_at: datetime | None
    messages_moved: int
    messages_to_move: int | None
    failure_reason: str | None
    task_handle: str | None  # only while it runs


@dataclass(frozen=True)
class DeadLetters:
    messages: int  # approximate, as SQS counts
    messages_in_flight: int
    tasks: list[MoveTask]  # newest first


def _move_task(entry: Any) -> MoveTask:
    started = entry.get("StartedTimestamp")
    return MoveTask(
        status=entry["Status"],
        started_at=datetime.fromtimestamp(started / 1000, UTC) if started else None,
        messages_moved=int(entry.get("ApproximateNumberOfMessagesMoved", 0)),
        messages_to_move=entry.get("ApproximateNumberOfMessagesToMove"),
        failure_reason=entry.get("FailureReason"),
        task_handle=entry.get("TaskHandle"),
    )


class SqsRedrive:
    def __init__(self, client: "SQSClient", dead_letter_queue_url: str, queue_url: str) -> None:
        self._client = client
        self._dlq_url = dead_letter_queue_url
        self._queue_url = queue_url
        self._arns: dict[str, str] = {}

    def _arn(self, url: str) -> str:
        if url not in self._arns:
            attributes = self._client.get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn"]
            )
            self._arns[url] = attributes["Attributes"]["QueueArn"]
        return self._arns[url]

    def _dead_letters(self) -> DeadLetters:
        attributes = self._client.get_queue_attributes(
            QueueUrl=self._dlq_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        listed = self._client.list_message_move_tasks(SourceArn=self._arn(self._dlq_url))
        tasks = sorted(
            (_move_task(entry) for entry in listed.get("Results", [])),
            key=lambda task: task.started_at or datetime.min.replace(tzinfo=UTC),
            reverse=True,
        )
        return DeadLetters(
            messages=int(attributes.get("ApproximateNumberOfMessages", 0)),
            messages_in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            tasks=tasks,
        )

    def _start(self, max_per_second: int | None) -> tuple[str, DeadLetters]:
        before = self._dead_letters()
        if any(task.status == RUNNING for task in before.tasks):
            raise RedriveRunningError
        rate = {"MaxNumberOfMessagesPerSecond": max_per_second} if max_per_second else {}
        started = self._client.start_message_move_task(
            SourceArn=self._arn(self._dlq_url),
            # Named, not left to SQS: a message put on the DLQ by hand has no source to return to.
            DestinationArn=self._arn(self._queue_url),
            **rate,
        )
        return started["TaskHandle"], before

    async def dead_letters(self) -> DeadLetters:
        """How many messages the DLQ holds and the recent redrives."""
        try:
            return await asyncio.to_thread(self._dead_letters)
        except (BotoCoreError, ClientError) as error:
            raise QueueUnavailableError("about its dead letters", error) from error

    async def start(self, max_per_second: int | None = None) -> tuple[str, DeadLetters]:
        """Start moving every dead letter back to the email queue: the task's handle, and the
        dead letters as they were just before it started."""
        try:
            return await asyncio.to_thread(self._start, max_per_second)
        except (BotoCoreError, ClientError) as error:
            raise QueueUnavailableError("the redrive", error) from error
