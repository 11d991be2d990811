"""At-least-once delivery from SQS never turns into a second send, and poison ends in the DLQ."""

import json
import uuid
from typing import Any

import httpx
import pytest

from email_flows import SENT_OR_LATER, sends_for, submit, wait_for_dead_letter, wait_for_final
from mailstack_stubs.control import StubControl
from mailstack_testing.waiting import eventually

pytestmark = pytest.mark.e2e

EMPTY_QUEUE = {
    "ApproximateNumberOfMessages": "0",
    "ApproximateNumberOfMessagesNotVisible": "0",
    "ApproximateNumberOfMessagesDelayed": "0",
}


def _queue_depth(sqs: Any, queue_url: str) -> dict[str, str]:
    attributes: dict[str, str] = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=list(EMPTY_QUEUE)
    )["Attributes"]
    return attributes


def _wait_until_empty(sqs: Any, queue_url: str, what: str) -> None:
    eventually(
        lambda: _queue_depth(sqs, queue_url),
        30,
        interval=0.2,
        until=lambda depth: depth == EMPTY_QUEUE,
        what=what,
    )


def test_a_redelivered_message_for_a_sent_email_is_not_sent_again(
    gateway: httpx.Client, elasticemail: StubControl, sqs: Any, stack: Any
) -> None:
    email_id = submit(gateway)
    assert wait_for_final(gateway, email_id)["status"] in SENT_OR_LATER
    _wait_until_empty(sqs, stack.email_queue_url, "the queue drained before the duplicates")
    duplicate = json.dumps({"version": 1, "type": "email.queued", "email_id": email_id})
    for _ in range(2):
        sqs.send_message(QueueUrl=stack.email_queue_url, MessageBody=duplicate)

    # A later email is sent after both duplicates were queued, and then the queue is empty:
    # the processor received both duplicates and deleted them (neither waits, in flight or
    # visible, for a later try), so what follows judges messages that were really consumed.
    marker = submit(gateway)
    assert wait_for_final(gateway, marker)["status"] in SENT_OR_LATER
    _wait_until_empty(sqs, stack.email_queue_url, "both duplicates consumed and deleted")
    assert len(sends_for(elasticemail, email_id)) == 1
    assert gateway.get(f"/v1/emails/{email_id}").json()["attempts"] == 1


def test_a_poison_message_ends_in_the_dead_letter_queue(sqs: Any, stack: Any) -> None:
    marker = f"poison-{uuid.uuid4()}"
    sqs.send_message(QueueUrl=stack.email_queue_url, MessageBody=marker)
    assert wait_for_dead_letter(sqs, stack.email_dlq_url, marker, timeout=90) == marker


def test_a_message_for_an_unknown_email_ends_in_the_dead_letter_queue(sqs: Any, stack: Any) -> None:
    unknown = str(uuid.uuid4())
    body = json.dumps({"version": 1, "type": "email.queued", "email_id": unknown})
    sqs.send_message(QueueUrl=stack.email_queue_url, MessageBody=body)
    assert unknown in wait_for_dead_letter(sqs, stack.email_dlq_url, unknown, timeout=90)
