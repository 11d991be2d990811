"""Batch, scheduled send and cancel, end to end: what reaches the providers, and when."""

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from email_flows import SENT_OR_LATER, an_email, history, sends_for, submit, wait_for_final
from mailstack_stubs.control import StubControl

pytestmark = pytest.mark.e2e

BATCH = 25


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _schedule(gateway: httpx.Client, send_at: datetime) -> str:
    response = gateway.post("/v1/emails", json=an_email(send_at=send_at.isoformat()))
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "SCHEDULED"
    email_id: str = response.json()["id"]
    return email_id


def _status(gateway: httpx.Client, email_id: str) -> str:
    response = gateway.get(f"/v1/emails/{email_id}")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


def _received_at(send: Any) -> datetime:
    return datetime.fromisoformat(send["received_at"])


def test_a_batch_reaches_sent_each_email_once(
    gateway: httpx.Client, elasticemail: StubControl
) -> None:
    emails = [an_email(to=[{"email": f"user{n}@example.com"}]) for n in range(BATCH)]

    response = gateway.post("/v1/emails/batch", json={"emails": emails})

    assert response.status_code == 202, response.text
    items = response.json()["items"]
    assert [item["status"] for item in items] == ["QUEUED"] * BATCH
    for item, email in zip(items, emails, strict=True):
        assert wait_for_final(gateway, item["id"])["status"] in SENT_OR_LATER
        [send] = sends_for(elasticemail, item["id"])
        assert email["to"][0]["email"] in str(send["body"])


def test_an_invalid_email_refuses_the_whole_batch_naming_it(gateway: httpx.Client) -> None:
    emails = [an_email() for _ in range(4)]
    emails[3] = an_email(to=[{"email": "not-an-address"}])

    response = gateway.post("/v1/emails/batch", json={"emails": emails})

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["emails[3].to[0].email"]


def test_a_scheduled_email_is_scheduled_until_its_time_then_sent_and_not_before(
    gateway: httpx.Client, elasticemail: StubControl
) -> None:
    send_at = _in(4)
    email_id = _schedule(gateway, send_at)

    assert _status(gateway, email_id) == "SCHEDULED"
    assert gateway.get(f"/v1/emails/{email_id}").json()["send_at"] is not None
    email = wait_for_final(gateway, email_id)

    assert email["status"] in SENT_OR_LATER
    [send] = sends_for(elasticemail, email_id)
    assert _received_at(send) >= send_at
    entries = history(gateway, email_id)
    assert [entry["status"] for entry in entries] == ["SCHEDULED", "QUEUED", "PROCESSING", "SENT"]
    assert entries[1]["detail"]["outcome"] == "due"
    assert datetime.fromisoformat(entries[1]["at"]) >= send_at


def test_a_canceled_scheduled_email_is_never_sent(
    gateway: httpx.Client, elasticemail: StubControl, sendgrid: StubControl
) -> None:
    send_at = _in(3)
    canceled = _schedule(gateway, send_at)

    response = gateway.post(f"/v1/emails/{canceled}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "CANCELED"
    # A sibling due a moment after it is sent: the scheduler has gone past the canceled one.
    sibling = _schedule(gateway, send_at + timedelta(seconds=1))
    assert wait_for_final(gateway, sibling)["status"] in SENT_OR_LATER
    assert _status(gateway, canceled) == "CANCELED"
    assert sends_for(elasticemail, canceled) == sends_for(sendgrid, canceled) == []
    assert [entry["status"] for entry in history(gateway, canceled)] == ["SCHEDULED", "CANCELED"]


def test_a_sent_email_cannot_be_canceled(gateway: httpx.Client) -> None:
    email_id = submit(gateway)
    assert wait_for_final(gateway, email_id)["status"] in SENT_OR_LATER

    response = gateway.post(f"/v1/emails/{email_id}/cancel")

    assert response.status_code == 409
    assert response.json()["status"] in SENT_OR_LATER
    assert _status(gateway, email_id) in SENT_OR_LATER
