"""Delivery truth end to end: the stubs post their providers' events to the gateway, which checks
them (SendGrid's signature, ElasticEmail's secret), records each once, moves the status forward
and suppresses addresses that bounce; the next email to such an address is never sent."""

import json
import uuid
from typing import Any

import httpx
import pytest

from email_flows import an_email, history, outcome_committed, sends_for, submit
from mailstack_stubs.control import StubControl
from mailstack_testing.waiting import eventually

pytestmark = pytest.mark.e2e

SIGNATURE = "x-twilio-email-event-webhook-signature"


def _status_is(gateway: httpx.Client, email_id: str, wanted: str) -> dict[str, Any]:
    """The email once its status is `wanted` and the processor's outcome is committed: a
    provider's event can move the status on before the processor records SENT."""
    return eventually(
        lambda: gateway.get(f"/v1/emails/{email_id}").json(),
        60,
        interval=0.2,
        until=lambda email: email["status"] == wanted and outcome_committed(email),
        what=f"email {email_id} {wanted}",
    )


def _event_rows(gateway: httpx.Client, email_id: str) -> list[dict[str, Any]]:
    return [
        entry
        for entry in history(gateway, email_id, provider_events=True)
        if entry["detail"].get("outcome") == "provider_event"
    ]


def _answered_events(stub: StubControl, message_id: str) -> list[dict[str, Any]]:
    """The stub's posts of events for `message_id`, once there are any: the stub lists a post
    only after reading the gateway's answer, a moment after the gateway committed the event."""
    return eventually(
        lambda: [p for p in stub.events() if p["message_id"] == message_id],
        30,
        interval=0.1,
        what=f"the stub's answered events of {message_id}",
    )


def _sent_through_sendgrid(gateway: httpx.Client, elasticemail: StubControl) -> dict[str, Any]:
    """An email ElasticEmail refused (503), sent by SendGrid, whose signed `delivered` event
    the gateway verified and recorded."""
    elasticemail.set_behaviour("error", status=503)
    email_id = submit(gateway)
    email = _status_is(gateway, email_id, "DELIVERED")
    elasticemail.reset()
    assert email["provider"] == "sendgrid"
    return email


def test_sendgrids_signed_delivery_event_moves_sent_to_delivered(
    gateway: httpx.Client, elasticemail: StubControl, sendgrid: StubControl
) -> None:
    email = _sent_through_sendgrid(gateway, elasticemail)

    entries = history(gateway, email["id"], provider_events=True)
    statuses = [(entry["status"], entry["provider"]) for entry in entries]
    assert ("SENT", "sendgrid") in statuses
    (delivered,) = _event_rows(gateway, email["id"])
    assert (delivered["status"], delivered["provider"]) == ("DELIVERED", "sendgrid")
    raw = delivered["detail"]["raw"]
    assert raw["sg_message_id"].startswith(email["provider_message_id"])
    assert raw["mailstack_email_id"] == email["id"]
    posted = _answered_events(sendgrid, email["provider_message_id"])
    assert [(p["event"], p["status"]) for p in posted] == [("delivered", 200)]
    assert SIGNATURE in {name.lower() for name in posted[0]["headers"]}


def test_a_tampered_event_is_refused_and_nothing_is_stored(
    stack: Any, gateway: httpx.Client, elasticemail: StubControl, sendgrid: StubControl
) -> None:
    email = _sent_through_sendgrid(gateway, elasticemail)
    (posted,) = _answered_events(sendgrid, email["provider_message_id"])
    tampered = posted["body"].replace('"delivered"', '"spamreport"')
    assert tampered != posted["body"]
    url = f"{stack.gateway_url}/v1/provider-events/sendgrid"

    refused = httpx.post(url, content=tampered, headers=posted["headers"], timeout=10)
    replayed = httpx.post(url, content=posted["body"], headers=posted["headers"], timeout=10)

    assert refused.status_code == 401
    assert (replayed.status_code, replayed.json()["duplicates"]) == (200, 1)
    assert [row["status"] for row in _event_rows(gateway, email["id"])] == ["DELIVERED"]
    assert gateway.get(f"/v1/emails/{email['id']}").json()["status"] == "DELIVERED"
    recipient = email["to"][0]["email"]
    listed = gateway.get("/v1/suppressions", params={"limit": 200}).json()["items"]
    assert recipient not in {item["email"] for item in listed}


def test_asking_the_stub_for_the_same_event_twice_records_one_row(
    gateway: httpx.Client, elasticemail: StubControl, sendgrid: StubControl
) -> None:
    email = _sent_through_sendgrid(gateway, elasticemail)
    message_id = email["provider_message_id"]

    first = sendgrid.post_event(message_id, "open")
    second = sendgrid.post_event(message_id, "open")

    assert first["event_id"] == second["event_id"]
    eventually(
        lambda: [p["status"] for p in sendgrid.events() if p["event"] == "open"],
        30,
        until=lambda answers: answers == [200, 200],
        what="both posts of the open answered",
    )
    rows = _event_rows(gateway, email["id"])
    assert [row["status"] for row in rows] == ["DELIVERED", "OPENED"]
    assert gateway.get(f"/v1/emails/{email['id']}").json()["status"] == "OPENED"


def test_a_bounce_suppresses_the_address_and_the_next_email_to_it_is_never_sent(
    gateway: httpx.Client, elasticemail: StubControl, sendgrid: StubControl
) -> None:
    # An address of this test's own: the development tenant's list outlives the test.
    address = f"bounce@x{uuid.uuid4().hex[:12]}.example.org"
    first = submit(gateway, an_email(to=[{"email": address}]))

    bounced = _status_is(gateway, first, "BOUNCED")

    assert bounced["provider"] == "elasticemail"
    (row,) = _event_rows(gateway, first)
    assert (row["detail"]["bounce"], row["detail"]["recipient"]) == ("hard", address)
    listed = gateway.get("/v1/suppressions", params={"limit": 200}).json()["items"]
    (entry,) = [item for item in listed if item["email"] == address]
    assert (entry["reason"], entry["email_id"]) == ("hard_bounce", first)

    second = submit(gateway, an_email(to=[{"email": address}], subject="Again"))
    failed = _status_is(gateway, second, "FAILED")

    final = history(gateway, second)[-1]
    assert (final["status"], final["detail"]["outcome"]) == ("FAILED", "suppressed")
    assert final["detail"]["suppressed"] == [address]
    assert failed["provider"] is None
    assert sends_for(elasticemail, second) == sends_for(sendgrid, second) == []
    assert gateway.delete(f"/v1/suppressions/{address}").status_code == 204


def test_a_partly_suppressed_email_goes_to_the_others(
    gateway: httpx.Client, elasticemail: StubControl
) -> None:
    domain = f"x{uuid.uuid4().hex[:12]}.example.org"
    blocked, kept = f"gone@{domain}", f"kept@{domain}"
    added = gateway.post("/v1/suppressions", json={"email": blocked})
    assert added.status_code == 201

    email_id = submit(gateway, an_email(to=[{"email": kept}, {"email": blocked}]))
    _status_is(gateway, email_id, "DELIVERED")

    (send,) = sends_for(elasticemail, email_id)
    assert send["body"]["Recipients"]["To"] == [kept]
    sent = [entry for entry in history(gateway, email_id) if entry["status"] == "SENT"]
    assert sent[0]["detail"]["suppressed"] == [blocked]
    assert json.loads(send["body"]["Content"]["Postback"])["mailstack_email_id"] == email_id
    assert gateway.delete(f"/v1/suppressions/{blocked}").status_code == 204
