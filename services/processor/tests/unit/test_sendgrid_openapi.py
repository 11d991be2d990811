"""Every request the SendGrid adapter builds is valid for SendGrid's POST /v3/mail/send schema."""

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from mailstack_processor.providers import sendgrid
from mailstack_processor.providers.base import Mailbox

SPEC_NAME = "sendgrid-mail-v3.openapi.json"
SPEC_URI = "urn:sendgrid-mail-v3"


def _spec_path() -> Path:
    """`<repo>/../shared/specs/...`, where the repo root is the directory holding uv.lock."""
    here = Path(__file__).resolve()
    root = next((parent for parent in here.parents if (parent / "uv.lock").is_file()), None)
    if root is None:
        pytest.fail(f"no uv.lock above {here}: cannot locate the repository root")
    return root.parent / "shared" / "specs" / SPEC_NAME


@pytest.fixture(scope="module")
def mail_send_validator() -> Draft202012Validator:
    path = _spec_path()
    if not path.is_file():
        pytest.fail(
            f"SendGrid OpenAPI spec not found at {path}; the checkout must have ../shared/specs/"
            f"{SPEC_NAME} beside the repository root"
        )
    spec: dict[str, Any] = json.loads(path.read_text())
    # OpenAPI 3.1 schemas are JSON Schema 2020-12; the request body points into components.
    request_body = spec["paths"]["/v3/mail/send"]["post"]["requestBody"]["$ref"]
    pointer = request_body.removeprefix("#") + "/content/application~1json/schema"
    registry: Registry[Any] = Registry().with_resource(
        SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    return Draft202012Validator(
        {"$ref": f"{SPEC_URI}#{pointer}"}, registry=registry, format_checker=FormatChecker()
    )


SHAPES: dict[str, dict[str, Any]] = {
    "text only": {"html": None},
    "html only": {"text": None},
    "text and html": {},
    "cc and bcc": {
        "cc": (Mailbox("bo@example.com", "Bo"), Mailbox("cy@example.com")),
        "bcc": (Mailbox("audit@example.com"),),
    },
    "reply_to with a name": {"reply_to": Mailbox("help@example.com", "Help Desk")},
    "no names anywhere": {
        "sender": Mailbox("orders@example.com"),
        "to": (Mailbox("alex@example.com"), Mailbox("dee@example.com")),
        "reply_to": Mailbox("help@example.com"),
    },
}


def test_the_validator_catches_an_invalid_request(
    mail_send_validator: Draft202012Validator,
) -> None:
    broken = {"personalizations": [{"cc": [{"email": "bo@example.com"}]}], "subject": ""}
    assert list(mail_send_validator.iter_errors(broken))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_request_matches_the_sendgrid_schema(
    make: Any, mail_send_validator: Draft202012Validator, shape: str
) -> None:
    body = sendgrid.build_request(make.email(**SHAPES[shape]))

    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in mail_send_validator.iter_errors(body)
    ]

    assert errors == [], f"{shape}: {json.dumps(body)}"
