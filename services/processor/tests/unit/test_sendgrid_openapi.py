"""Every request the SendGrid adapter builds is valid for SendGrid's POST /v3/mail/send schema."""

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from mailstack_processor.providers import sendgrid
from mailstack_processor.providers.base import Attachment, Mailbox

SHAPES: dict[str, dict[str, Any]] = {
    "text only": {"html": None},
    "html only": {"text": None},
    "text and html": {},
    "cc and bcc": {
        "cc": (Mailbox("bo@example.com", "Bo"), Mailbox("cy@example.com")),
        "bcc": (Mailbox("audit@example.com"),),
    },
    "reply_to with a name": {"reply_to": Mailbox("help@example.com", "Help Desk")},
    "headers, categories, custom args and attachments": {
        "headers": {"X-Entity-Ref-ID": "order-1234"},
        "tags": ("welcome", "beta"),
        "metadata": {"user_id": "42"},
        "attachments": (
            Attachment("invoice.pdf", b"%PDF-1.4", "application/pdf"),
            Attachment("logo.png", b"\x89PNG", "image/png", "inline", "logo"),
        ),
    },
    "no names anywhere": {
        "sender": Mailbox("orders@example.com"),
        "to": (Mailbox("alex@example.com"), Mailbox("dee@example.com")),
        "reply_to": Mailbox("help@example.com"),
    },
}


def test_the_validator_catches_an_invalid_request(
    sendgrid_mail_send_schema: Draft202012Validator,
) -> None:
    broken = {"personalizations": [{"cc": [{"email": "bo@example.com"}]}], "subject": ""}
    assert list(sendgrid_mail_send_schema.iter_errors(broken))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_request_matches_the_sendgrid_schema(
    make: Any, sendgrid_mail_send_schema: Draft202012Validator, shape: str
) -> None:
    body = sendgrid.build_request(make.email(**SHAPES[shape]))

    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sendgrid_mail_send_schema.iter_errors(body)
    ]

    assert errors == [], f"{shape}: {json.dumps(body)}"
