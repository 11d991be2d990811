"""The SendGrid v3 stub answers and validates like the real mail/send endpoint."""

from __future__ import annotations

import base64
import gzip
import json
import time
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import RunningStub

UNAUTHORIZED = {
    "errors": [
        {
            "message": "The provided authorization grant is invalid, expired, or revoked",
            "field": None,
            "help": None,
        }
    ]
}


def _fields(response_body: dict[str, Any]) -> list[str | None]:
    return [error["field"] for error in response_body["errors"]]


def test_accepts_a_valid_send_with_202_an_empty_body_and_a_message_id(
    sendgrid: RunningStub,
) -> None:
    response = sendgrid.send()

    assert response.status_code == 202
    assert response.content == b""
    message_id = response.headers["X-Message-Id"]
    assert message_id
    [recorded] = sendgrid.control.messages()
    assert recorded["status"] == 202
    assert recorded["message_id"] == message_id
    assert recorded["body"] == sendgrid.valid_body()


def test_gives_every_send_its_own_message_id(sendgrid: RunningStub) -> None:
    assert sendgrid.send().headers["X-Message-Id"] != sendgrid.send().headers["X-Message-Id"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "test-key-123"},
        {"X-ElasticEmail-ApiKey": "test-key-123"},
    ],
    ids=["missing", "wrong", "no-scheme", "elasticemail-style"],
)
def test_refuses_a_missing_or_wrong_key_with_401(
    sendgrid: RunningStub, headers: dict[str, str]
) -> None:
    response = sendgrid.send(headers=headers)

    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert [m["status"] for m in sendgrid.control.messages()] == [401]


def test_accepts_fields_it_does_not_check(sendgrid: RunningStub) -> None:
    body = sendgrid.valid_body() | {
        "reply_to": {"email": "help@example.com"},
        "custom_args": {"email_id": "e-1"},
        "categories": ["receipt"],
        "send_at": int(time.time()) + 3600,
        "headers": {"X-Order": "42"},
        "attachments": [{"content": "aGk=", "filename": "a.txt", "type": "text/plain"}],
        "tracking_settings": {"click_tracking": {"enable": False}},
        "something_new": {"nested": True},
    }
    body["personalizations"][0] |= {
        "cc": [{"email": "cc@example.com"}],
        "bcc": [{"email": "bcc@example.com"}],
        "custom_args": {"k": "v"},
    }

    assert sendgrid.send(body).status_code == 202


def test_accepts_a_subject_given_in_every_personalization(sendgrid: RunningStub) -> None:
    body = sendgrid.valid_body()
    del body["subject"]
    body["personalizations"][0]["subject"] = "Per person"

    assert sendgrid.send(body).status_code == 202


def test_accepts_a_template_without_subject_or_content(sendgrid: RunningStub) -> None:
    body = sendgrid.valid_body() | {"template_id": "d-123"}
    del body["subject"], body["content"]

    assert sendgrid.send(body).status_code == 202


def test_accepts_a_gzipped_body(sendgrid: RunningStub) -> None:
    headers = sendgrid.auth() | {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    content = gzip.compress(json.dumps(sendgrid.valid_body()).encode())

    assert sendgrid.send(content=content, headers=headers).status_code == 202


def _mutated(change: Any) -> Any:
    def make(body: dict[str, Any]) -> Any:
        change(body)
        return body

    return make


def _recipients(count: int) -> list[dict[str, str]]:
    return [{"email": f"r{index}@example.com"} for index in range(count)]


INVALID_BODIES: dict[str, tuple[Any, list[str | None]]] = {
    "not an object": (lambda _: [1], [None]),
    "no from": (_mutated(lambda b: b.pop("from")), ["from.email"]),
    "from without email": (_mutated(lambda b: b.update({"from": {"name": "x"}})), ["from.email"]),
    "bad from": (_mutated(lambda b: b.update({"from": {"email": "shop"}})), ["from.email"]),
    "no personalizations": (_mutated(lambda b: b.pop("personalizations")), ["personalizations"]),
    "empty personalizations": (
        _mutated(lambda b: b.update({"personalizations": []})),
        ["personalizations"],
    ),
    "personalization without to": (
        _mutated(lambda b: b["personalizations"][0].pop("to")),
        ["personalizations.0.to"],
    ),
    "bad to address": (
        _mutated(lambda b: b["personalizations"].append({"to": [{"email": "a@b.c"}, {}]})),
        ["personalizations.1.to.1.email"],
    ),
    "bad cc address": (
        _mutated(lambda b: b["personalizations"][0].update({"cc": [{"email": "no at"}]})),
        ["personalizations.0.cc.0.email"],
    ),
    "empty bcc": (
        _mutated(lambda b: b["personalizations"][0].update({"bcc": []})),
        ["personalizations.0.bcc"],
    ),
    "duplicate recipient": (
        _mutated(
            lambda b: b["personalizations"][0].update({"bcc": [{"email": "ALEX@example.com"}]})
        ),
        ["personalizations.0"],
    ),
    "no subject": (_mutated(lambda b: b.pop("subject")), ["subject"]),
    "empty subject": (_mutated(lambda b: b.update({"subject": ""})), ["subject"]),
    "no content": (_mutated(lambda b: b.pop("content")), ["content"]),
    "empty content": (_mutated(lambda b: b.update({"content": []})), ["content"]),
    "content without type or value": (
        _mutated(lambda b: b.update({"content": [{}]})),
        ["content.0.type", "content.0.value"],
    ),
    "text/plain not first": (
        _mutated(lambda b: b["content"].reverse()),
        ["content.1.type"],
    ),
    "too many recipients": (
        _mutated(lambda b: b["personalizations"][0].update({"to": _recipients(1001)})),
        ["personalizations"],
    ),
    "too many personalizations": (
        _mutated(lambda b: b.update({"personalizations": [{"to": _recipients(1)}] * 1001})),
        ["personalizations"],
    ),
    "attachment not base64": (
        _mutated(lambda b: b.update({"attachments": [{"content": "%%", "filename": "a"}]})),
        ["attachments.0.content"],
    ),
    "attachment without filename": (
        _mutated(lambda b: b.update({"attachments": [{"content": "aGk="}]})),
        ["attachments.0.filename"],
    ),
    "inline attachment without content_id": (
        _mutated(
            lambda b: b.update(
                {"attachments": [{"content": "aGk=", "filename": "a", "disposition": "inline"}]}
            )
        ),
        ["attachments.0.content_id"],
    ),
    "attachment type with parameters": (
        _mutated(
            lambda b: b.update(
                {"attachments": [{"content": "aGk=", "filename": "a", "type": "text/plain; a=b"}]}
            )
        ),
        ["attachments.0.type"],
    ),
    "reserved header": (_mutated(lambda b: b.update({"headers": {"Bcc": "x@e.com"}})), ["headers"]),
    "header name with a space": (
        _mutated(lambda b: b.update({"headers": {"X Ref": "1"}})),
        ["headers"],
    ),
    "header value with CRLF": (
        _mutated(lambda b: b.update({"headers": {"X-Ref": "1\r\nBcc: x@e.com"}})),
        ["headers"],
    ),
    "reserved header in a personalization": (
        _mutated(lambda b: b["personalizations"][0].update({"headers": {"subject": "x"}})),
        ["personalizations.0.headers"],
    ),
    "eleven categories": (
        _mutated(lambda b: b.update({"categories": [f"c{index}" for index in range(11)]})),
        ["categories"],
    ),
    "category over 255 characters": (
        _mutated(lambda b: b.update({"categories": ["c" * 256]})),
        ["categories"],
    ),
    "repeated category": (_mutated(lambda b: b.update({"categories": ["a", "a"]})), ["categories"]),
    "custom_args not strings": (
        _mutated(lambda b: b["personalizations"][0].update({"custom_args": {"n": 1}})),
        ["personalizations.0.custom_args"],
    ),
    "custom_args over 10,000 bytes": (
        _mutated(lambda b: b["personalizations"][0].update({"custom_args": {"k": "v" * 10_000}})),
        ["personalizations.0.custom_args"],
    ),
    "send_at too far ahead": (
        _mutated(lambda b: b.update({"send_at": int(time.time()) + 73 * 3600})),
        ["send_at"],
    ),
    "several problems at once": (
        _mutated(lambda b: b.update({"from": {}, "subject": None, "content": None})),
        ["from.email", "subject", "content"],
    ),
}


@pytest.mark.parametrize(("make_body", "fields"), INVALID_BODIES.values(), ids=INVALID_BODIES)
def test_rejects_an_invalid_body_with_400_listing_each_field(
    sendgrid: RunningStub, make_body: Any, fields: list[str | None]
) -> None:
    response = sendgrid.send(make_body(sendgrid.valid_body()))

    assert response.status_code == 400
    body = response.json()
    assert _fields(body) == fields
    for error in body["errors"]:
        assert set(error) == {"message", "field", "help"}
        assert isinstance(error["message"], str)
        assert error["message"]
    assert [m["status"] for m in sendgrid.control.messages()] == [400]


def test_records_attachments_headers_categories_and_custom_args_as_sent(
    sendgrid: RunningStub,
) -> None:
    pdf = b"%PDF-1.4\x00\xff"
    body = sendgrid.valid_body() | {
        "headers": {"X-Entity-Ref-ID": "order-1234"},
        "categories": ["welcome"],
        "attachments": [
            {
                "content": base64.b64encode(pdf).decode(),
                "filename": "invoice.pdf",
                "type": "application/pdf",
                "disposition": "inline",
                "content_id": "invoice",
            }
        ],
    }
    body["personalizations"][0]["custom_args"] = {"user_id": "42"}

    assert sendgrid.send(body).status_code == 202

    [recorded] = sendgrid.control.messages()
    sent = recorded["body"]
    assert base64.b64decode(sent["attachments"][0]["content"]) == pdf
    assert sent["headers"] == {"X-Entity-Ref-ID": "order-1234"}
    assert sent["categories"] == ["welcome"]
    assert sent["personalizations"][0]["custom_args"] == {"user_id": "42"}


def test_rejects_malformed_json_with_400_and_records_no_body(sendgrid: RunningStub) -> None:
    headers = sendgrid.auth() | {"Content-Type": "application/json"}

    response = sendgrid.send(content=b"{not json", headers=headers)

    assert response.status_code == 400
    assert _fields(response.json()) == [None]
    [recorded] = sendgrid.control.messages()
    assert (recorded["status"], recorded["body"]) == (400, None)
