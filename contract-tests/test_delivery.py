"""An accepted email is delivered through the primary, or the secondary when the primary fails."""

from datetime import datetime
from typing import Any

import httpx
import pytest

from conftest import MAX_ATTEMPTS
from email_flows import (
    SENT_OR_LATER,
    history,
    sends_for,
    steps,
    submit,
    wait_for_dead_letter,
    wait_for_final,
)
from mailstack_stubs.control import StubControl

pytestmark = pytest.mark.e2e

PROVIDER_TIMEOUT_SECONDS = 3.0


def _at(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["at"])


def test_accepts_an_email_and_sends_it_through_elasticemail(
    gateway: httpx.Client, elasticemail: StubControl, sendgrid: StubControl
) -> None:
    response = gateway.post(
        "/v1/emails",
        json={
            "from": {"email": "app@example.com", "name": "Example App"},
            "to": [{"email": "user@example.com"}],
            "cc": [{"email": "cc@example.com"}],
            "reply_to": {"email": "support@example.com"},
            "subject": "Hello",
            "text": "Hi there",
        },
    )
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status"] == "QUEUED"
    assert response.headers["location"] == f"/v1/emails/{accepted['id']}"
    assert accepted["links"] == {
        "self": f"/v1/emails/{accepted['id']}",
        "history": f"/v1/emails/{accepted['id']}/history",
    }

    email = wait_for_final(gateway, accepted["id"])
    assert email["status"] in SENT_OR_LATER
    assert email["provider"] == "elasticemail"
    assert email["attempts"] == 1

    sends = sends_for(elasticemail, accepted["id"])
    assert len(sends) == 1
    body = sends[0]["body"]
    assert sends[0]["status"] == 200
    assert body["Recipients"]["To"] == ["user@example.com"]
    assert body["Recipients"]["CC"] == ["cc@example.com"]
    assert body["Content"]["From"] == "Example App <app@example.com>"
    assert body["Content"]["ReplyTo"] == "support@example.com"
    assert body["Content"]["Subject"] == "Hello"
    assert body["Content"]["Body"] == [
        {"ContentType": "PlainText", "Content": "Hi there", "Charset": "utf-8"}
    ]
    assert email["provider_message_id"], "the provider's MessageID is stored"
    assert sends_for(sendgrid, accepted["id"]) == []
    assert steps(history(gateway, accepted["id"])) == [
        ("QUEUED", None),
        ("PROCESSING", None),
        ("SENT", "elasticemail"),
    ]


def test_submit_email_alias_has_the_same_contract(
    gateway: httpx.Client, elasticemail: StubControl
) -> None:
    response = gateway.post(
        "/submitEmail",
        json={
            "from": {"email": "app@example.com"},
            "to": [{"email": "user@example.com"}],
            "subject": "Alias",
            "html": "<b>hi</b>",
        },
    )
    assert response.status_code == 202
    assert wait_for_final(gateway, response.json()["id"])["status"] in SENT_OR_LATER


def test_falls_back_to_sendgrid_when_elasticemail_answers_500(
    gateway: httpx.Client, elasticemail: StubControl, sendgrid: StubControl
) -> None:
    elasticemail.set_behaviour("error", status=500)
    email_id = submit(gateway)

    email = wait_for_final(gateway, email_id)
    assert email["status"] in SENT_OR_LATER
    assert email["provider"] == "sendgrid"
    entries = history(gateway, email_id)
    assert steps(entries) == [
        ("QUEUED", None),
        ("PROCESSING", None),
        ("FAILED", "elasticemail"),
        ("SENT", "sendgrid"),
    ]
    assert entries[2]["detail"]["http_status"] == 500
    sends = sends_for(sendgrid, email_id)
    assert len(sends) == 1
    assert sends[0]["status"] == 202
    assert sends[0]["body"]["personalizations"][0]["to"] == [
        {"email": "user@example.com", "name": "A User"}
    ]
    assert email["provider_message_id"], "SendGrid's X-Message-Id is stored"


def test_falls_back_to_sendgrid_within_the_timeout_when_elasticemail_hangs(
    gateway: httpx.Client, elasticemail: StubControl, sendgrid: StubControl
) -> None:
    elasticemail.set_behaviour("hang")
    email_id = submit(gateway)

    email = wait_for_final(gateway, email_id)
    assert email["status"] in SENT_OR_LATER
    assert email["provider"] == "sendgrid"
    entries = history(gateway, email_id)
    assert steps(entries)[-2:] == [("FAILED", "elasticemail"), ("SENT", "sendgrid")]
    assert entries[-2]["detail"]["outcome"] == "unknown", "a timeout's outcome is unknown"
    processing = next(entry for entry in entries if entry["status"] == "PROCESSING")
    waited = (_at(entries[-1]) - _at(processing)).total_seconds()
    # Cut by the provider timeout, not by anything shorter, and with only a small margin.
    assert PROVIDER_TIMEOUT_SECONDS - 0.1 <= waited <= PROVIDER_TIMEOUT_SECONDS + 2.0


def test_fails_without_trying_sendgrid_when_elasticemail_rejects_the_email(
    gateway: httpx.Client, elasticemail: StubControl, sendgrid: StubControl
) -> None:
    elasticemail.set_behaviour("reject")
    email_id = submit(gateway)

    email = wait_for_final(gateway, email_id)
    assert email["status"] == "FAILED"
    assert email["last_error"]
    assert steps(history(gateway, email_id)) == [
        ("QUEUED", None),
        ("PROCESSING", None),
        ("FAILED", "elasticemail"),
    ]
    assert sends_for(sendgrid, email_id) == []


def test_fails_after_the_last_attempt_when_both_providers_are_down(
    gateway: httpx.Client, elasticemail: StubControl, sendgrid: StubControl, stack: Any, sqs: Any
) -> None:
    elasticemail.set_behaviour("error", status=503)
    sendgrid.set_behaviour("error", status=500)
    email_id = submit(gateway)

    email = wait_for_final(gateway, email_id, timeout=120)
    assert email["status"] == "FAILED"
    assert "500" in email["last_error"]
    entries = history(gateway, email_id)
    attempts = [entry for entry in entries if entry["status"] == "PROCESSING"]
    assert len(attempts) == MAX_ATTEMPTS
    failed = {("FAILED", "elasticemail"), ("FAILED", "sendgrid")}
    failed_sends = [step for step in steps(entries) if step in failed]
    # Each attempt tried both providers; the last row is the email's own final FAILED.
    assert len(failed_sends) == 2 * MAX_ATTEMPTS + 1
    assert entries[-1]["status"] == "FAILED"
    assert entries[-1]["detail"]["outcome"] == "out_of_attempts"
    assert len(sends_for(elasticemail, email_id)) == MAX_ATTEMPTS
    assert len(sends_for(sendgrid, email_id)) == MAX_ATTEMPTS
    # The spent message is left to the redrive policy: it ends in the dead-letter queue.
    wait_for_dead_letter(sqs, stack.email_dlq_url, email_id)
