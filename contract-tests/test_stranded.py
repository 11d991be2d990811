"""No accepted email is stranded: when the queue loses its messages, every email is still sent,
once."""

from typing import Any

import psycopg
import pytest

from email_flows import SENT_OR_LATER, gateway_client, history, sends_for, submit, wait_for_final
from mailstack_stack.postgres import libpq_url
from mailstack_stubs.control import StubControl
from mailstack_testing.aws import localstack_clients
from mailstack_testing.waiting import eventually

pytestmark = pytest.mark.e2e

EMAILS = 10
# Long enough for the processor to be back and polling before the first republish, even on a
# loaded machine (its start takes seconds there); so each email is republished exactly once.
STRANDED_AFTER_SECONDS = 20


def _unpublished(stack: Any) -> int:
    """Outbox rows left: 0 once every publish call has returned and been recorded."""
    with psycopg.connect(libpq_url(stack.database_url)) as connection:
        row = connection.execute("SELECT count(*) FROM email_outbox").fetchone()
    return int(row[0]) if row else 0


def _visible(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_emails_whose_messages_were_purged_are_all_sent_once(stack_factory: Any) -> None:
    stack = stack_factory(
        {
            "gateway": {
                "STRANDED_AFTER_SECONDS": str(STRANDED_AFTER_SECONDS),
                "STRANDED_CHECK_SECONDS": "1",
            },
            "processor": {"RECEIVE_WAIT_SECONDS": "1"},
        }
    )
    sqs, _ = localstack_clients(stack.aws_endpoint_url)
    stack.stop_component("processor")
    with gateway_client(stack) as gateway:
        ids = [submit(gateway) for _ in range(EMAILS)]
        # Published (the outbox is done with them), then lost: the queue is purged. A publish
        # that the queue answered late is retried, so the queue may hold duplicates (delivery
        # is at least once; the processor's claim sends each email once): at least EMAILS.
        eventually(
            lambda: (_unpublished(stack), _visible(sqs, stack.email_queue_url)),
            30,
            interval=0.2,
            until=lambda seen: seen[0] == 0 and seen[1] >= EMAILS,
            what=f"the outbox empty and all {EMAILS} messages in the queue",
        )
        sqs.purge_queue(QueueUrl=stack.email_queue_url)
        eventually(
            lambda: _visible(sqs, stack.email_queue_url),
            30,
            interval=0.2,
            until=lambda visible: visible == 0,
            what="the purged queue empty",
        )
        stack.start_component("processor")

        finals = [wait_for_final(gateway, email_id, timeout=90) for email_id in ids]
        histories = [history(gateway, email_id) for email_id in ids]

    assert all(final["status"] in SENT_OR_LATER for final in finals)
    assert len(finals) == EMAILS
    for entries in histories:
        outcomes = [entry["detail"].get("outcome") for entry in entries]
        assert outcomes.count("republished") == 1, outcomes
    elasticemail = StubControl(stack.elasticemail_stub_url)
    assert [len(sends_for(elasticemail, email_id)) for email_id in ids] == [1] * EMAILS
