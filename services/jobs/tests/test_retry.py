"""The retry job against the real Postgres and a LocalStack SQS queue."""

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from sqlalchemy import Engine

from mailstack_core.messages import EmailQueuedMessage
from mailstack_core.status import EmailStatus
from mailstack_jobs import retry
from mailstack_jobs.queue import SqsEmailQueue
from mailstack_jobs.repository import EmailRetryStore
from mailstack_jobs.retry import RetryPolicy, requeue_failed
from mailstack_testing.waiting import eventually

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

pytestmark = pytest.mark.integration

BASE = timedelta(minutes=15)
POLICY = RetryPolicy(max_rounds=3, backoff_base_seconds=BASE.total_seconds(), batch_size=100)
ACCEPTED = (EmailStatus.QUEUED, {"outcome": "accepted"})


def _failed_out_of_attempts(ago: timedelta) -> tuple[EmailStatus, dict[str, Any], timedelta]:
    return (
        EmailStatus.FAILED,
        {"outcome": "out_of_attempts", "last_error": "elasticemail: 503", "attempt": 5},
        ago,
    )


def _requeued(round_: int, ago: timedelta) -> tuple[EmailStatus, dict[str, Any], timedelta]:
    return (EmailStatus.QUEUED, {"outcome": "requeued", "round": round_, "by": "retry-job"}, ago)


def add_failed(rows: Any, failed_ago: timedelta, previous_rounds: int = 0) -> uuid.UUID:
    """A FAILED email whose last receive ran out of attempts `failed_ago`, after
    `previous_rounds` rounds of this job."""
    start = failed_ago + timedelta(hours=10)
    history = [(*ACCEPTED, start)]
    for round_ in range(1, previous_rounds + 1):
        history += [
            _failed_out_of_attempts(start - timedelta(hours=2 * round_ - 1)),
            _requeued(round_, start - timedelta(hours=2 * round_)),
        ]
    history.append(_failed_out_of_attempts(failed_ago))
    email_id: uuid.UUID = rows.add(
        start, status=EmailStatus.FAILED, updated_age=failed_ago, history=history
    )
    return email_id


def received_email_ids(sqs: "SQSClient", queue_url: str, expected: int) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []

    def received() -> list[uuid.UUID]:
        response = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        ids.extend(
            EmailQueuedMessage.from_json(message["Body"]).email_id
            for message in response.get("Messages", [])
        )
        return ids

    return eventually(
        received,
        5,
        interval=0,  # each receive long-polls for a second
        until=lambda ids: len(ids) >= expected,
        what=f"{expected} messages received",
    )


@pytest.fixture
def store(engine: Engine) -> EmailRetryStore:
    return EmailRetryStore(engine)


@pytest.fixture
def queue(sqs: "SQSClient", sqs_queues: Any) -> SqsEmailQueue:
    return SqsEmailQueue(sqs, sqs_queues.email_queue_url)


def test_requeues_only_emails_whose_last_failure_was_transient(
    rows: Any, store: EmailRetryStore, queue: SqsEmailQueue, sqs: "SQSClient", sqs_queues: Any
) -> None:
    transient = add_failed(rows, timedelta(hours=1))
    rejected = rows.add(
        timedelta(hours=2),
        status=EmailStatus.FAILED,
        updated_age=timedelta(hours=1),
        history=[
            (*ACCEPTED, timedelta(hours=2)),
            (
                EmailStatus.FAILED,
                {"outcome": "rejected", "error": "bad address"},
                timedelta(hours=1),
            ),
        ],
    )
    # Every recipient on the suppression list: never sent, and never to be.
    suppressed = rows.add(
        timedelta(hours=2),
        status=EmailStatus.FAILED,
        updated_age=timedelta(hours=1),
        history=[
            (*ACCEPTED, timedelta(hours=2)),
            (
                EmailStatus.FAILED,
                {"outcome": "suppressed", "suppressed": ["bounce@example.org"]},
                timedelta(hours=1),
            ),
        ],
    )
    sent = rows.add(timedelta(hours=2), status=EmailStatus.SENT)

    summary = requeue_failed(store, queue, POLICY)

    assert (summary.requeued, summary.published, summary.left_in_outbox) == (1, 1, 0)
    assert rows.status(transient) is EmailStatus.QUEUED
    assert rows.status(rejected) is EmailStatus.FAILED
    assert rows.status(suppressed) is EmailStatus.FAILED
    assert rows.status(sent) is EmailStatus.SENT
    last = rows.history(transient)[-1]
    assert last.status == EmailStatus.QUEUED
    assert last.detail == {"outcome": "requeued", "round": 1, "by": "retry-job"}
    assert len(rows.history(rejected)) == 2
    assert rows.outbox_ids() == set()
    assert received_email_ids(sqs, sqs_queues.email_queue_url, 1) == [transient]


def test_waits_longer_before_each_round(
    rows: Any, store: EmailRetryStore, queue: SqsEmailQueue, sqs: "SQSClient", sqs_queues: Any
) -> None:
    too_soon_for_round_1 = add_failed(rows, BASE - timedelta(minutes=5))
    due_for_round_1 = add_failed(rows, BASE + timedelta(minutes=1))
    too_soon_for_round_2 = add_failed(rows, 2 * BASE - timedelta(minutes=5), previous_rounds=1)
    due_for_round_3 = add_failed(rows, 4 * BASE + timedelta(minutes=1), previous_rounds=2)

    summary = requeue_failed(store, queue, POLICY)

    assert summary.requeued == 2
    assert rows.status(too_soon_for_round_1) is EmailStatus.FAILED
    assert rows.status(too_soon_for_round_2) is EmailStatus.FAILED
    assert rows.history(due_for_round_1)[-1].detail["round"] == 1
    assert rows.history(due_for_round_3)[-1].detail["round"] == 3
    received = received_email_ids(sqs, sqs_queues.email_queue_url, 2)
    assert sorted(received) == sorted([due_for_round_1, due_for_round_3])


def test_leaves_emails_that_used_their_rounds_failed_and_says_so_once(
    rows: Any, store: EmailRetryStore, queue: SqsEmailQueue
) -> None:
    exhausted = add_failed(rows, timedelta(days=1), previous_rounds=3)
    history_before = len(rows.history(exhausted))

    first = requeue_failed(store, queue, POLICY)
    second = requeue_failed(store, queue, POLICY)

    assert (first.exhausted, first.requeued) == (1, 0)
    assert (second.exhausted, second.requeued) == (0, 0)
    assert rows.status(exhausted) is EmailStatus.FAILED
    history = rows.history(exhausted)
    assert len(history) == history_before + 1
    assert history[-1].status == EmailStatus.FAILED
    assert history[-1].detail == {"outcome": "retries_exhausted", "rounds": 3, "by": "retry-job"}


def test_a_requeued_email_that_fails_again_gets_the_next_round(
    rows: Any, store: EmailRetryStore, queue: SqsEmailQueue
) -> None:
    email_id = add_failed(rows, timedelta(hours=1), previous_rounds=1)

    summary = requeue_failed(store, queue, POLICY)

    assert summary.requeued == 1
    assert rows.history(email_id)[-1].detail == {
        "outcome": "requeued",
        "round": 2,
        "by": "retry-job",
    }


def test_keeps_the_outbox_row_when_sqs_is_down(
    rows: Any, store: EmailRetryStore, sqs_queues: Any, unused_tcp_port: int
) -> None:
    transient = [add_failed(rows, timedelta(hours=1)) for _ in range(2)]
    unreachable = boto3.client(
        "sqs",
        endpoint_url=f"http://127.0.0.1:{unused_tcp_port}",
        region_name="us-east-1",
        config=Config(connect_timeout=1, read_timeout=1, retries={"max_attempts": 1}),
    )

    summary = requeue_failed(store, SqsEmailQueue(unreachable, sqs_queues.email_queue_url), POLICY)

    assert (summary.requeued, summary.published, summary.left_in_outbox) == (2, 0, 2)
    # Durably queued: QUEUED, recorded, and the gateway's relay will publish the outbox rows.
    assert rows.outbox_ids() == set(transient)
    for email_id in transient:
        assert rows.status(email_id) is EmailStatus.QUEUED
        assert rows.history(email_id)[-1].detail["outcome"] == "requeued"


def test_the_lambda_handler_requeues_and_publishes(
    rows: Any,
    database_url: str,
    localstack_endpoint: str,
    sqs_queues: Any,
    sqs: "SQSClient",
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transient = add_failed(rows, timedelta(hours=1))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("EMAIL_QUEUE_URL", sqs_queues.email_queue_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", localstack_endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")

    result = retry.handler({"source": "aws.events"}, None)

    assert result["requeued"] == result["published"] == 1
    assert rows.status(transient) is EmailStatus.QUEUED
    assert received_email_ids(sqs, sqs_queues.email_queue_url, 1) == [transient]


@pytest.mark.parametrize("status", [EmailStatus.SCHEDULED, EmailStatus.CANCELED])
def test_never_requeues_a_scheduled_or_canceled_email(
    rows: Any, store: EmailRetryStore, queue: SqsEmailQueue, status: EmailStatus
) -> None:
    # Even with a transient failure as its last history row, only a FAILED email is retried.
    email_id = rows.add(
        timedelta(hours=5),
        status=status,
        updated_age=timedelta(hours=4),
        history=[(*ACCEPTED, timedelta(hours=5)), _failed_out_of_attempts(timedelta(hours=4))],
    )

    summary = requeue_failed(store, queue, POLICY)

    assert (summary.requeued, summary.exhausted) == (0, 0)
    assert rows.status(email_id) is status
    assert len(rows.history(email_id)) == 2
    assert rows.outbox_ids() == set()
