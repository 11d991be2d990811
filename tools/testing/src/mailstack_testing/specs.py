"""Validators built from the third-party specifications vendored in `specs/` (tests read them)."""

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SENDGRID_SPEC = Path("specs") / "sendgrid-mail-v3.openapi.json"
_SPEC_URI = "urn:sendgrid-mail-v3"


def load_sendgrid_spec(repo_root: Path) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads((repo_root / SENDGRID_SPEC).read_text())
    return spec


def mail_send_validator(spec: dict[str, Any]) -> Draft202012Validator:
    """A JSON Schema validator for SendGrid's `POST /v3/mail/send` request body."""
    # OpenAPI 3.1 schemas are JSON Schema 2020-12; the request body points into components.
    request_body = spec["paths"]["/v3/mail/send"]["post"]["requestBody"]["$ref"]
    pointer = request_body.removeprefix("#") + "/content/application~1json/schema"
    registry: Registry[Any] = Registry().with_resource(
        _SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    return Draft202012Validator(
        {"$ref": f"{_SPEC_URI}#{pointer}"}, registry=registry, format_checker=FormatChecker()
    )
