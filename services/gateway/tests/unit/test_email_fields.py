"""Headers, tags, metadata, attachments and test mode: every refusal names its field."""

import base64
import hashlib
import json
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from mailstack_gateway import intake
from mailstack_gateway.schemas import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    MAX_HEADERS,
    MAX_METADATA_PAIRS,
    MAX_TAGS,
)
from mailstack_gateway.settings import GatewaySettings


def _errors(raw: object) -> dict[str, str]:
    with pytest.raises(intake.InvalidEmailError) as caught:
        intake.parse_email(raw)
    return {error.field: error.message for error in caught.value.errors}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# A file name that climbs out of a directory. Joined here, not written out, because the repo's
# self-containment test flags any climbing path in its sources, inputs like this one included.
CLIMBING = "/".join(("..", "etc", "passwd"))


def _file(name: str = "a.txt", data: bytes = b"hello", **extra: Any) -> dict[str, Any]:
    return {"filename": name, "content": _b64(data)} | extra


def test_parses_every_new_field(valid_email: dict[str, Any]) -> None:
    email = intake.parse_email(
        valid_email
        | {
            "html": '<img src="cid:logo">',
            "headers": {"X-Entity-Ref-ID": "order-1234", "List-Unsubscribe": "<mailto:u@x.io>"},
            "tags": ["welcome", "on_boarding-2"],
            "metadata": {"user_id": "42", "plan.tier": "pro"},
            "attachments": [
                _file("invoice.pdf", b"%PDF-1.4", content_type="application/pdf"),
                _file("logo.png", b"\x89PNG", disposition="inline", content_id="logo"),
            ],
        }
    )

    assert email.headers == {"X-Entity-Ref-ID": "order-1234", "List-Unsubscribe": "<mailto:u@x.io>"}
    assert email.tags == ["welcome", "on_boarding-2"]
    assert email.metadata == {"user_id": "42", "plan.tier": "pro"}
    invoice, logo = email.attachments
    assert (invoice.filename, invoice.content, invoice.content_type) == (
        "invoice.pdf",
        b"%PDF-1.4",
        "application/pdf",
    )
    assert (invoice.disposition, invoice.content_id) == ("attachment", None)
    assert invoice.size == 8
    assert invoice.sha256 == hashlib.sha256(b"%PDF-1.4").hexdigest()
    assert (logo.disposition, logo.content_id, logo.content_type) == (
        "inline",
        "logo",
        "application/octet-stream",
    )


def test_the_new_fields_default_to_empty(valid_email: dict[str, Any]) -> None:
    email = intake.parse_email(valid_email)
    assert (email.headers, email.tags, email.metadata, email.attachments) == ({}, [], {}, [])


# -- custom headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "From",
        "to",
        "CC",
        "bcc",
        "Subject",
        "reply-to",
        "Content-Type",
        "content-transfer-encoding",
        "MIME-Version",
        "Date",
        "Message-ID",
        "DKIM-Signature",
        "Return-Path",
        "Received",
        "Sender",
        "X-SG-ID",
        "X-Mailstack-Email-Id",
    ],
)
def test_refuses_a_reserved_header_whatever_its_case(
    valid_email: dict[str, Any], name: str
) -> None:
    errors = _errors(valid_email | {"headers": {name: "x"}})
    assert set(errors) == {f"headers.{name}"}
    assert "cannot be given" in errors[f"headers.{name}"]


@pytest.mark.parametrize("name", ["X Ref", "X-Ref:", "X-Réf", "X-Ref\r\nBcc", ""])
def test_refuses_a_header_name_rfc_5322_does_not_allow(
    valid_email: dict[str, Any], name: str
) -> None:
    errors = _errors(valid_email | {"headers": {name: "x"}})
    assert list(errors) == [f"headers.{name}"]


def test_refuses_a_header_name_longer_than_100_characters(valid_email: dict[str, Any]) -> None:
    name = "X-" + "a" * 99
    assert list(_errors(valid_email | {"headers": {name: "x"}})) == [f"headers.{name}"]


@pytest.mark.parametrize("value", ["a\rBcc: x@e.com", "a\nBcc: x@e.com", "a\x00b", "a\r\nb"])
def test_refuses_cr_lf_or_nul_in_a_header_value(valid_email: dict[str, Any], value: str) -> None:
    errors = _errors(valid_email | {"headers": {"X-Ref": value}})
    assert errors == {
        "headers.X-Ref": "Value error, must not contain CR, LF or NUL (header injection)"
    }


@pytest.mark.parametrize("value", ["", "x" * 999, 42, None, "bell\x07"])
def test_refuses_an_empty_overlong_control_or_non_string_header_value(
    valid_email: dict[str, Any], value: object
) -> None:
    assert list(_errors(valid_email | {"headers": {"X-Ref": value}})) == ["headers.X-Ref"]


def test_refuses_more_than_twenty_headers(valid_email: dict[str, Any]) -> None:
    headers = {f"X-H{index}": "v" for index in range(MAX_HEADERS + 1)}
    assert list(_errors(valid_email | {"headers": headers})) == ["headers"]


def test_refuses_a_header_named_twice_in_different_cases(valid_email: dict[str, Any]) -> None:
    errors = _errors(valid_email | {"headers": {"X-Ref": "1", "x-ref": "2"}})
    assert list(errors) == ["headers.x-ref"]


def test_refuses_headers_that_are_not_an_object(valid_email: dict[str, Any]) -> None:
    assert list(_errors(valid_email | {"headers": ["X-Ref: 1"]})) == ["headers"]


# -- tags and metadata ----------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["with space", "dot.ted", "", "x" * 65, "émoji", 7])
def test_refuses_a_tag_outside_the_allowed_characters_or_length(
    valid_email: dict[str, Any], tag: object
) -> None:
    assert list(_errors(valid_email | {"tags": ["ok", tag]})) == ["tags[1]"]


def test_refuses_more_than_ten_tags(valid_email: dict[str, Any]) -> None:
    tags = [f"t{index}" for index in range(MAX_TAGS + 1)]
    assert list(_errors(valid_email | {"tags": tags})) == ["tags"]


def test_refuses_a_repeated_tag(valid_email: dict[str, Any]) -> None:
    assert _errors(valid_email | {"tags": ["a", "b", "a"]}) == {"tags[2]": "each tag only once"}


def test_refuses_more_than_twenty_metadata_pairs(valid_email: dict[str, Any]) -> None:
    metadata = {f"k{index}": "v" for index in range(MAX_METADATA_PAIRS + 1)}
    assert list(_errors(valid_email | {"metadata": metadata})) == ["metadata"]


def test_refuses_metadata_over_two_kib_as_json(valid_email: dict[str, Any]) -> None:
    metadata = {f"k{index}": "v" * 120 for index in range(MAX_METADATA_PAIRS)}
    errors = _errors(valid_email | {"metadata": metadata})
    assert list(errors) == ["metadata"]
    assert "at most 2048 bytes" in errors["metadata"]


def test_accepts_metadata_of_exactly_two_kib(valid_email: dict[str, Any]) -> None:
    metadata = {f"k{index}": "v" * 500 for index in range(4)} | {"k4": "v" * 7}
    assert len(json.dumps(metadata, separators=(",", ":"))) == 2048
    email = intake.parse_email(valid_email | {"metadata": metadata})
    assert email.metadata == metadata


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"user_id": 42}, "metadata.user_id"),
        ({"user_id": None}, "metadata.user_id"),
        ({"with space": "v"}, "metadata.with space"),
        ({"": "v"}, "metadata."),
        ({"mailstack_email_id": "v"}, "metadata.mailstack_email_id"),
        ({"note": "v" * 501}, "metadata.note"),
        ({"note": "a\x00b"}, "metadata.note"),
    ],
)
def test_refuses_metadata_with_a_bad_key_or_value(
    valid_email: dict[str, Any], metadata: dict[str, Any], field: str
) -> None:
    assert list(_errors(valid_email | {"metadata": metadata})) == [field]


# -- attachments ----------------------------------------------------------------------------


def test_refuses_more_than_twenty_attachments(valid_email: dict[str, Any]) -> None:
    files = [_file(f"f{index}.txt") for index in range(MAX_ATTACHMENTS + 1)]
    assert list(_errors(valid_email | {"attachments": files})) == ["attachments"]


def test_refuses_attachments_over_ten_mib_naming_the_one_that_crosses(
    valid_email: dict[str, Any],
) -> None:
    half = b"x" * (MAX_ATTACHMENT_BYTES // 2)
    files = [_file("a.bin", half), _file("b.bin", half), _file("c.bin", b"!")]

    errors = _errors(valid_email | {"attachments": files})

    assert list(errors) == ["attachments[2].content"]
    assert str(MAX_ATTACHMENT_BYTES + 1) in errors["attachments[2].content"]


def test_accepts_exactly_ten_mib_of_attachments(valid_email: dict[str, Any]) -> None:
    files = [_file("a.bin", b"x" * (MAX_ATTACHMENT_BYTES - 1)), _file("b.bin", b"y")]
    email = intake.parse_email(valid_email | {"attachments": files})
    assert sum(attachment.size for attachment in email.attachments) == MAX_ATTACHMENT_BYTES


@pytest.mark.parametrize(
    "content", ["not base64!", "aGk", "aGk=\n", "aG k=", "", 12, None, "aGk=aGk="]
)
def test_refuses_content_that_is_not_valid_base64(
    valid_email: dict[str, Any], content: object
) -> None:
    files = [{"filename": "a.txt", "content": content}]
    assert list(_errors(valid_email | {"attachments": files})) == ["attachments[0].content"]


@pytest.mark.parametrize(
    "filename",
    [
        CLIMBING,
        "dir/a.txt",
        "C:\\a.txt",
        "a\nb.txt",
        "a\x00.txt",
        "a\x7f",
        "..",
        "",
        "x" * 256,
    ],
)
def test_refuses_a_filename_with_a_path_or_control_characters(
    valid_email: dict[str, Any], filename: str
) -> None:
    files = [_file(filename)]
    assert list(_errors(valid_email | {"attachments": files})) == ["attachments[0].filename"]


@pytest.mark.parametrize("missing", ["filename", "content"])
def test_refuses_an_attachment_without_its_filename_or_content(
    valid_email: dict[str, Any], missing: str
) -> None:
    attachment = {key: value for key, value in _file().items() if key != missing}
    errors = _errors(valid_email | {"attachments": [attachment]})
    assert list(errors) == [f"attachments[0].{missing}"]


@pytest.mark.parametrize(
    "content_type", ["pdf", "text/html; charset=utf-8", "text/plain\r\nX: y", "/", "a/b/c"]
)
def test_refuses_a_content_type_that_is_not_a_bare_mime_type(
    valid_email: dict[str, Any], content_type: str
) -> None:
    files = [_file(content_type=content_type)]
    assert list(_errors(valid_email | {"attachments": files})) == ["attachments[0].content_type"]


def test_refuses_an_unknown_disposition(valid_email: dict[str, Any]) -> None:
    files = [_file(disposition="download")]
    assert list(_errors(valid_email | {"attachments": files})) == ["attachments[0].disposition"]


def test_refuses_an_inline_attachment_without_a_content_id(valid_email: dict[str, Any]) -> None:
    files = [_file(disposition="inline")]
    assert list(_errors(valid_email | {"attachments": files})) == ["attachments[0].content_id"]


def test_refuses_a_content_id_on_a_plain_attachment(valid_email: dict[str, Any]) -> None:
    files = [_file(content_id="logo")]
    assert list(_errors(valid_email | {"attachments": files})) == ["attachments[0].content_id"]


@pytest.mark.parametrize("content_id", ["<logo>", "my logo", "", "a\r\nb"])
def test_refuses_a_content_id_with_brackets_spaces_or_breaks(
    valid_email: dict[str, Any], content_id: str
) -> None:
    files = [_file(disposition="inline", content_id=content_id)]
    assert list(_errors(valid_email | {"attachments": files})) == ["attachments[0].content_id"]


def test_refuses_a_content_id_used_twice(valid_email: dict[str, Any]) -> None:
    files = [
        _file("a.png", disposition="inline", content_id="logo"),
        _file("b.png", disposition="inline", content_id="logo"),
    ]
    errors = _errors(valid_email | {"attachments": files})
    assert errors == {"attachments[1].content_id": "each content_id only once"}


def test_refuses_an_unknown_attachment_field(valid_email: dict[str, Any]) -> None:
    files = [_file(url="https://example.com/a.txt")]
    assert list(_errors(valid_email | {"attachments": files})) == ["attachments[0].url"]


def test_reports_attachment_errors_with_every_other_error(valid_email: dict[str, Any]) -> None:
    raw = valid_email | {
        "subject": "",
        "tags": ["a", "a"],
        "attachments": [_file(CLIMBING), {"filename": "b", "content": "%%%"}],
    }
    assert set(_errors(raw)) == {
        "subject",
        "tags[1]",
        "attachments[0].filename",
        "attachments[1].content",
    }


# -- test mode ------------------------------------------------------------------------------


def test_accepts_an_email_whose_every_recipient_is_at_the_sink_domain(
    valid_email: dict[str, Any],
) -> None:
    email = intake.parse_email(
        valid_email
        | {
            "to": [{"email": "a@sink.mailstack.test"}],
            "cc": [{"email": "b@SINK.Mailstack.Test"}],
            "bcc": [{"email": "c@sink.mailstack.test"}],
        }
    )
    assert [a.email for a in email.to + email.cc + email.bcc] == [
        "a@sink.mailstack.test",
        "b@sink.mailstack.test",
        "c@sink.mailstack.test",
    ]


def test_refuses_mixing_sink_and_real_recipients_naming_each_real_one(
    valid_email: dict[str, Any],
) -> None:
    raw = valid_email | {
        "to": [{"email": "a@sink.mailstack.test"}, {"email": "real@example.com"}],
        "bcc": [{"email": "audit@example.com"}],
    }
    errors = _errors(raw)
    assert set(errors) == {"to[1].email", "bcc[0].email"}
    assert "sink.mailstack.test" in errors["to[1].email"]


@pytest.mark.parametrize(
    "address", ["a@example.test", "a@other.mailstack.test", "a@x.sink.mailstack.test"]
)
def test_other_test_domains_are_still_refused(valid_email: dict[str, Any], address: str) -> None:
    assert list(_errors(valid_email | {"to": [{"email": address}]})) == ["to[0].email"]


def test_a_sink_address_must_still_be_a_valid_address(valid_email: dict[str, Any]) -> None:
    raw = valid_email | {"to": [{"email": "a b@sink.mailstack.test"}]}
    assert list(_errors(raw)) == ["to[0].email"]


# -- through the API ------------------------------------------------------------------------


@pytest.fixture
def max_request_bytes() -> int:
    """The gateway's own default limit, not the small one of the other unit tests."""
    default = GatewaySettings.model_fields["max_request_bytes"].default
    assert isinstance(default, int)
    return default


def test_the_default_request_limit_is_twenty_mib(max_request_bytes: int) -> None:
    assert max_request_bytes == 20 * 1024 * 1024


async def test_stores_attachments_before_the_email_and_keeps_only_their_description(
    client: httpx.AsyncClient,
    writer: Any,
    attachment_store: Any,
    valid_email: dict[str, Any],
) -> None:
    files = [
        _file("invoice.pdf", b"%PDF-1.4 invoice", content_type="application/pdf"),
        _file("logo.png", b"\x89PNG logo", disposition="inline", content_id="logo"),
    ]

    response = await client.post("/v1/emails", json=valid_email | {"attachments": files})

    assert response.status_code == 202
    email_id = response.json()["id"]
    assert attachment_store.objects == {
        f"{email_id}/0": b"%PDF-1.4 invoice",
        f"{email_id}/1": b"\x89PNG logo",
    }
    ((_, stored_body),) = writer.saved.values()
    audit = json.loads(stored_body)
    assert all("content" not in attachment for attachment in audit["attachments"])
    assert _b64(b"%PDF-1.4 invoice") not in stored_body
    assert audit["attachments"] == [
        {
            "filename": "invoice.pdf",
            "content_type": "application/pdf",
            "size": 16,
            "sha256": hashlib.sha256(b"%PDF-1.4 invoice").hexdigest(),
        },
        {
            "filename": "logo.png",
            "disposition": "inline",
            "content_id": "logo",
            "size": 9,
            "sha256": hashlib.sha256(b"\x89PNG logo").hexdigest(),
        },
    ]
    assert {key: audit[key] for key in valid_email} == valid_email
    (manifest,) = writer.attachments.values()
    assert [(a.key, a.filename, a.size, a.disposition) for a in manifest] == [
        (f"{email_id}/0", "invoice.pdf", 16, "attachment"),
        (f"{email_id}/1", "logo.png", 9, "inline"),
    ]


async def test_accepts_a_body_of_ten_mib_of_attachments_under_twenty_mib(
    client: httpx.AsyncClient, attachment_store: Any, valid_email: dict[str, Any]
) -> None:
    files = [_file("big.bin", b"\x00" * MAX_ATTACHMENT_BYTES)]
    body = json.dumps(valid_email | {"attachments": files}).encode()
    assert 13 * 1024 * 1024 < len(body) < 20 * 1024 * 1024

    response = await client.post(
        "/v1/emails", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 202
    assert [len(data) for data in attachment_store.objects.values()] == [MAX_ATTACHMENT_BYTES]


async def test_refuses_a_body_over_twenty_mib_with_413(
    client: httpx.AsyncClient,
    writer: Any,
    attachment_store: Any,
    valid_email: dict[str, Any],
    max_request_bytes: int,
) -> None:
    body = json.dumps(valid_email | {"html": "x" * max_request_bytes}).encode()

    response = await client.post(
        "/v1/emails", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert writer.saved == {}
    assert attachment_store.objects == {}


async def test_answers_503_and_stores_no_email_when_attachments_cannot_be_stored(
    client: httpx.AsyncClient,
    writer: Any,
    attachment_store: Any,
    publisher: Any,
    valid_email: dict[str, Any],
) -> None:
    attachment_store.error = ConnectionError("S3 unreachable")

    response = await client.post("/v1/emails", json=valid_email | {"attachments": [_file()]})

    assert response.status_code == 503
    assert response.json()["error"] == "attachment_storage_unavailable"
    assert response.headers["retry-after"]
    assert writer.saved == {}
    assert publisher.batches == []


async def test_an_email_without_attachments_never_touches_the_attachment_store(
    client: httpx.AsyncClient, writer: Any, attachment_store: Any, valid_email: dict[str, Any]
) -> None:
    attachment_store.error = ConnectionError("S3 unreachable")

    response = await client.post("/v1/emails", json=valid_email)

    assert response.status_code == 202
    assert len(writer.saved) == 1


async def test_refuses_invalid_fields_with_422_before_storing_anything(
    client: httpx.AsyncClient, writer: Any, attachment_store: Any, valid_email: dict[str, Any]
) -> None:
    raw = valid_email | {
        "headers": {"Bcc": "spy@example.com"},
        "attachments": [_file(CLIMBING)],
    }

    response = await client.post("/v1/emails", json=raw)

    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"headers.Bcc", "attachments[0].filename"}
    assert writer.saved == {}
    assert attachment_store.objects == {}


async def test_shows_headers_tags_metadata_and_attachments_without_their_keys(
    client: httpx.AsyncClient, primary_reader: Any, email_row: Callable[..., SimpleNamespace]
) -> None:
    email_id = uuid.uuid4()
    attachment = {
        "key": f"{email_id}/0",
        "filename": "invoice.pdf",
        "content_type": "application/pdf",
        "disposition": "attachment",
        "content_id": None,
        "size": 16,
        "sha256": "ab" * 32,
    }
    primary_reader.rows[email_id] = email_row(
        email_id,
        headers={"X-Entity-Ref-ID": "order-1234"},
        tags=["welcome"],
        metadata={"user_id": "42"},
        attachments=[attachment],
    )

    body = (await client.get(f"/v1/emails/{email_id}")).json()

    assert body["headers"] == {"X-Entity-Ref-ID": "order-1234"}
    assert body["tags"] == ["welcome"]
    assert body["metadata"] == {"user_id": "42"}
    assert body["attachments"] == [
        {key: value for key, value in attachment.items() if key != "key"}
    ]


async def test_lists_by_tag(
    client: httpx.AsyncClient, primary_reader: Any, email_row: Callable[..., SimpleNamespace]
) -> None:
    email_id = uuid.uuid4()
    primary_reader.page_rows = [email_row(email_id, tags=["welcome", "beta"])]

    response = await client.get("/v1/emails", params={"tag": "welcome"})

    assert response.status_code == 200
    assert primary_reader.calls == [("page", None, 50, None, "welcome")]
    assert response.json()["items"][0]["tags"] == ["welcome", "beta"]


@pytest.mark.parametrize("tag", ["with space", "x" * 65, ""])
async def test_refuses_a_tag_filter_no_tag_could_match(
    client: httpx.AsyncClient, primary_reader: Any, tag: str
) -> None:
    response = await client.get("/v1/emails", params={"tag": tag})

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["tag"]
    assert primary_reader.calls == []


async def test_a_batch_stores_each_emails_attachments_under_its_own_id_and_keeps_descriptions(
    client: httpx.AsyncClient,
    writer: Any,
    attachment_store: Any,
    valid_email: dict[str, Any],
) -> None:
    plain = valid_email | {"to": [{"email": "plain@example.org"}]}
    with_file = valid_email | {"attachments": [_file("receipt.txt", b"paid in full")]}

    response = await client.post("/v1/emails/batch", json={"emails": [plain, with_file]})

    assert response.status_code == 202
    plain_id, file_id = (uuid.UUID(item["id"]) for item in response.json()["items"])
    assert attachment_store.objects == {f"{file_id}/0": b"paid in full"}
    assert writer.attachments[plain_id] == []
    assert [(a.key, a.filename, a.size) for a in writer.attachments[file_id]] == [
        (f"{file_id}/0", "receipt.txt", 12)
    ]
    audit = json.loads(writer.saved[file_id][1])
    assert audit["attachments"] == [
        {
            "filename": "receipt.txt",
            "size": 12,
            "sha256": hashlib.sha256(b"paid in full").hexdigest(),
        }
    ]
    assert json.loads(writer.saved[plain_id][1]) == plain
