"""The ElasticEmail v4 stub answers, validates and replays like the real transactional API."""

from __future__ import annotations

import base64
import uuid
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import RunningStub


def test_accepts_a_valid_send_with_200_and_both_ids(elasticemail: RunningStub) -> None:
    response = elasticemail.send()

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    ids = response.json()
    assert set(ids) == {"TransactionID", "MessageID"}
    assert all(isinstance(value, str) and value for value in ids.values())
    [recorded] = elasticemail.control.messages()
    assert recorded["status"] == 200
    assert recorded["body"] == elasticemail.valid_body()
    assert recorded["message_id"] == ids["MessageID"]
    assert recorded["replay"] is False


def test_gives_every_send_its_own_ids(elasticemail: RunningStub) -> None:
    first, second = elasticemail.send().json(), elasticemail.send().json()

    assert first["TransactionID"] != second["TransactionID"]
    assert first["MessageID"] != second["MessageID"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-ElasticEmail-ApiKey": "wrong"}, {"Authorization": "Bearer test-key-123"}],
    ids=["missing", "wrong", "sendgrid-style"],
)
def test_refuses_a_missing_or_wrong_key_with_401(
    elasticemail: RunningStub, headers: dict[str, str]
) -> None:
    response = elasticemail.send(headers=headers)

    assert response.status_code == 401
    assert set(response.json()) == {"Error"}
    assert [m["status"] for m in elasticemail.control.messages()] == [401]


def test_accepts_fields_it_does_not_check(elasticemail: RunningStub) -> None:
    body = elasticemail.valid_body()
    body["Recipients"] |= {"CC": ["Bo <bo@example.com>"], "BCC": []}
    body["Content"] |= {
        "ReplyTo": "help@example.com",
        "Headers": {"X-Order": "42"},
        "Attachments": [{"BinaryContent": "aGk=", "Name": "a.txt", "ContentType": "text/plain"}],
        "Merge": {"name": "Alex"},
        "Utm": {"Source": "mail"},
    }
    body["Options"] = {"TimeOffset": None, "PoolName": "main", "TrackOpens": True}
    body["SomethingNew"] = {"nested": [1, 2]}

    assert elasticemail.send(body).status_code == 200


def test_accepts_a_plain_address_as_sender(elasticemail: RunningStub) -> None:
    body = elasticemail.valid_body()
    body["Content"]["From"] = "orders@example.com"

    assert elasticemail.send(body).status_code == 200


def _without(body: dict[str, Any], section: str, key: str) -> dict[str, Any]:
    del body[section][key]
    return body


def _with(body: dict[str, Any], section: str, key: str, value: Any) -> dict[str, Any]:
    body[section][key] = value
    return body


INVALID_BODIES: dict[str, tuple[Any, str]] = {
    "not an object": (["Recipients"], "JSON object"),
    "no recipients": ({"Content": {"From": "a@example.com"}}, "Recipients"),
    "no To": (lambda b: _without(b, "Recipients", "To"), "Recipients.To"),
    "empty To": (lambda b: _with(b, "Recipients", "To", []), "Recipients.To"),
    "To not a list": (lambda b: _with(b, "Recipients", "To", "a@example.com"), "Recipients.To"),
    "bad To address": (lambda b: _with(b, "Recipients", "To", ["nope"]), "Recipients.To[0]"),
    "bad CC address": (
        lambda b: _with(b, "Recipients", "CC", ["ok@example.com", "a b@example"]),
        "Recipients.CC[1]",
    ),
    "BCC not a list": (lambda b: _with(b, "Recipients", "BCC", "x@example.com"), "Recipients.BCC"),
    "no content": ({"Recipients": {"To": ["a@example.com"]}}, "Content"),
    "no From": (lambda b: _without(b, "Content", "From"), "Content.From"),
    "bad From": (lambda b: _with(b, "Content", "From", "Shop <orders>"), "Content.From"),
    "Subject not a string": (lambda b: _with(b, "Content", "Subject", 7), "Content.Subject"),
    "Body not a list": (lambda b: _with(b, "Content", "Body", "hi"), "Content.Body"),
    "unknown ContentType": (
        lambda b: _with(b, "Content", "Body", [{"ContentType": "text/html", "Content": "x"}]),
        "Content.Body[0].ContentType",
    ),
    "Content not a string": (
        lambda b: _with(b, "Content", "Body", [{"ContentType": "PlainText", "Content": None}]),
        "Content.Body[0].Content",
    ),
    "attachment without BinaryContent": (
        lambda b: _with(b, "Content", "Attachments", [{"Name": "a.txt"}]),
        "Content.Attachments[0].BinaryContent",
    ),
    "attachment not base64": (
        lambda b: _with(b, "Content", "Attachments", [{"Name": "a", "BinaryContent": "%%"}]),
        "Content.Attachments[0].BinaryContent",
    ),
    "attachment without Name": (
        lambda b: _with(b, "Content", "Attachments", [{"BinaryContent": "aGk="}]),
        "Content.Attachments[0].Name",
    ),
    "header value with a line break": (
        lambda b: _with(b, "Content", "Headers", {"X-Ref": "1\nBcc: x@e.com"}),
        "Content.Headers.X-Ref",
    ),
    "header name with a colon": (
        lambda b: _with(b, "Content", "Headers", {"X:Ref": "1"}),
        "Content.Headers",
    ),
    "Postback not a string": (
        lambda b: _with(b, "Content", "Postback", {"a": "b"}),
        "Content.Postback",
    ),
    "Merge not strings": (lambda b: _with(b, "Content", "Merge", {"n": 1}), "Content.Merge"),
    "ChannelName not a string": (
        lambda b: b | {"Options": {"ChannelName": ["welcome"]}},
        "Options.ChannelName",
    ),
}


@pytest.mark.parametrize(("make_body", "field"), INVALID_BODIES.values(), ids=INVALID_BODIES)
def test_rejects_an_invalid_body_with_400_naming_the_field(
    elasticemail: RunningStub, make_body: Any, field: str
) -> None:
    body = make_body(elasticemail.valid_body()) if callable(make_body) else make_body

    response = elasticemail.send(body)

    assert response.status_code == 400
    error = response.json()
    assert set(error) == {"Error"}
    assert field in error["Error"]
    assert [m["status"] for m in elasticemail.control.messages()] == [400]


def test_records_attachments_headers_channel_and_postback_as_sent(
    elasticemail: RunningStub,
) -> None:
    pdf = b"%PDF-1.4\x00\xff"
    body = elasticemail.valid_body() | {"Options": {"ChannelName": "welcome"}}
    body["Content"] |= {
        "Headers": {"X-Entity-Ref-ID": "order-1234"},
        "Attachments": [
            {
                "BinaryContent": base64.b64encode(pdf).decode(),
                "Name": "invoice.pdf",
                "ContentType": "application/pdf",
            }
        ],
        "Postback": '{"user_id":"42"}',
    }

    assert elasticemail.send(body).status_code == 200

    [recorded] = elasticemail.control.messages()
    sent = recorded["body"]
    assert base64.b64decode(sent["Content"]["Attachments"][0]["BinaryContent"]) == pdf
    assert sent["Content"]["Headers"] == {"X-Entity-Ref-ID": "order-1234"}
    assert sent["Content"]["Postback"] == '{"user_id":"42"}'
    assert sent["Options"] == {"ChannelName": "welcome"}


def test_rejects_malformed_json_with_400_and_records_no_body(elasticemail: RunningStub) -> None:
    headers = elasticemail.auth() | {"Content-Type": "application/json"}

    response = elasticemail.send(content=b'{"Recipients": ', headers=headers)

    assert response.status_code == 400
    assert set(response.json()) == {"Error"}
    [recorded] = elasticemail.control.messages()
    assert recorded["body"] is None
    assert recorded["status"] == 400
    assert recorded["headers"]["content-type"] == "application/json"


def test_replays_the_first_answer_for_a_repeated_idempotency_key(
    elasticemail: RunningStub,
) -> None:
    headers = elasticemail.auth() | {"Idempotency-Key": str(uuid.uuid4())}

    first = elasticemail.send(headers=headers)
    again = elasticemail.send(headers=headers)

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    sends = elasticemail.control.messages()
    assert [(s["status"], s["replay"]) for s in sends] == [(200, False), (200, True)]
    assert sends[0]["message_id"] == sends[1]["message_id"] == first.json()["MessageID"]
    assert sends[1]["headers"]["idempotency-key"] == headers["Idempotency-Key"]


def test_treats_reordered_json_as_the_same_body_for_idempotency(
    elasticemail: RunningStub,
) -> None:
    headers = elasticemail.auth() | {"Idempotency-Key": "order-42"}
    body = elasticemail.valid_body()
    reordered = dict(reversed(list(body.items())))

    first = elasticemail.send(body, headers=headers)
    again = elasticemail.send(reordered, headers=headers)

    assert again.json() == first.json()


def test_refuses_a_reused_idempotency_key_with_another_body(elasticemail: RunningStub) -> None:
    headers = elasticemail.auth() | {"Idempotency-Key": "order-43"}
    other = elasticemail.valid_body()
    other["Content"]["Subject"] = "Something else"

    assert elasticemail.send(headers=headers).status_code == 200
    response = elasticemail.send(other, headers=headers)

    assert response.status_code == 409
    assert set(response.json()) == {"Error"}


def test_sends_again_without_an_idempotency_key(elasticemail: RunningStub) -> None:
    first, second = elasticemail.send(), elasticemail.send()

    assert first.json() != second.json()
    assert [s["replay"] for s in elasticemail.control.messages()] == [False, False]


def test_executes_a_retry_whose_first_attempt_failed(elasticemail: RunningStub) -> None:
    headers = elasticemail.auth() | {"Idempotency-Key": "order-44"}
    elasticemail.control.set_behaviour("error", status=503)
    assert elasticemail.send(headers=headers).status_code == 503
    elasticemail.control.set_behaviour("ok")

    retried = elasticemail.send(headers=headers)

    assert retried.status_code == 200
    assert [s["replay"] for s in elasticemail.control.messages()] == [False, False]


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_refuses_an_idempotency_key_of_bad_length(elasticemail: RunningStub, key: str) -> None:
    response = elasticemail.send(headers=elasticemail.auth() | {"Idempotency-Key": key})

    assert response.status_code == 400


def test_reset_forgets_idempotency_keys(elasticemail: RunningStub) -> None:
    headers = elasticemail.auth() | {"Idempotency-Key": "order-45"}
    first = elasticemail.send(headers=headers)
    elasticemail.control.reset()

    again = elasticemail.send(headers=headers)

    assert again.json() != first.json()
    assert [s["replay"] for s in elasticemail.control.messages()] == [False]
