"""The SendGrid stub agrees with SendGrid's own OpenAPI schema for POST /v3/mail/send."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import pytest
from jsonschema import Draft202012Validator

if TYPE_CHECKING:
    from conftest import RunningStub


def _spec_examples(spec: dict[str, Any]) -> dict[str, Any]:
    media = spec["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"]
    return {name: example["value"] for name, example in media["examples"].items()}


def _accepted_bodies(stub: RunningStub, spec: dict[str, Any]) -> dict[str, Any]:
    full = stub.valid_body() | {
        "reply_to": {"email": "help@example.com", "name": "Help"},
        "categories": ["receipt", "order"],
        "headers": {"X-Order": "42"},
        "attachments": [
            {"content": "aGk=", "filename": "a.txt", "disposition": "inline", "content_id": "a"}
        ],
        "mail_settings": {"sandbox_mode": {"enable": True}},
    }
    full["personalizations"] = [
        {
            "to": [{"email": "alex@example.com"}],
            "cc": [{"email": "bo@example.com"}],
            "bcc": [{"email": "cy@example.com"}],
            "subject": "Per person",
            "custom_args": {"email_id": "e-1"},
        },
        {"to": [{"email": "dee@example.com", "name": "Dee"}]},
    ]
    return {"minimal": stub.valid_body(), "full": full} | _spec_examples(spec)


def test_every_body_the_stub_accepts_matches_the_schema(
    sendgrid: RunningStub,
    sendgrid_spec: dict[str, Any],
    sendgrid_mail_send_schema: Draft202012Validator,
) -> None:
    for name, body in _accepted_bodies(sendgrid, sendgrid_spec).items():
        assert sendgrid.send(body).status_code == 202, name
        errors = [error.message for error in sendgrid_mail_send_schema.iter_errors(body)]
        assert errors == [], name


def _break(body: dict[str, Any], path: list[str | int], value: Any = None) -> dict[str, Any]:
    """The body with the field at `path` removed (no value) or replaced."""
    broken = copy.deepcopy(body)
    parent: Any = broken
    for step in path[:-1]:
        parent = parent[step]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return broken


SCHEMA_VIOLATIONS: dict[str, tuple[list[str | int], Any]] = {
    "missing from": (["from"], None),
    "missing personalizations": (["personalizations"], None),
    "personalization without to": (["personalizations", 0, "to"], None),
    "recipient without email": (["personalizations", 0, "to", 0, "email"], None),
    "from email without @": (["from", "email"], "orders.example.com"),
    "empty subject": (["subject"], ""),
    "content without value": (["content", 0, "value"], None),
    "empty content value": (["content", 0, "value"], ""),
    "too many personalizations": (["personalizations"], [{"to": [{"email": "a@b.co"}]}] * 1001),
    "attachment without filename": (["attachments"], [{"content": "aGk="}]),
    "too many categories": (["categories"], [f"c{index}" for index in range(11)]),
    "from not an object": (["from"], "orders@example.com"),
}


@pytest.mark.parametrize(("path", "value"), SCHEMA_VIOLATIONS.values(), ids=SCHEMA_VIOLATIONS)
def test_a_body_the_schema_rejects_is_rejected_by_the_stub(
    sendgrid: RunningStub,
    sendgrid_mail_send_schema: Draft202012Validator,
    path: list[str | int],
    value: Any,
) -> None:
    body = _break(sendgrid.valid_body(), path, value)
    assert not sendgrid_mail_send_schema.is_valid(body)

    response = sendgrid.send(body)

    assert response.status_code == 400
    assert response.json()["errors"]
