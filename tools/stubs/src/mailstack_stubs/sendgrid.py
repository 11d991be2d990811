"""SendGrid v3 `POST /v3/mail/send`: bearer key check, validation, 202 with X-Message-Id."""

import base64
import binascii
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse, Response

from mailstack_stubs.addresses import is_valid_address
from mailstack_stubs.behaviour import Behaviour, Mode
from mailstack_stubs.sending import Answer, SendRequest, status_phrase

NAME = "sendgrid"
SEND_PATH = "/v3/mail/send"
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CATEGORIES = 10
MAX_CATEGORY_CHARS = 255
# "Total custom_args size may not exceed 10,000 bytes" (per personalization and at the top).
MAX_CUSTOM_ARGS_BYTES = 10_000
# Headers a request may not set (the OpenAPI's `headers` description), compared without case.
RESERVED_HEADERS = frozenset(
    {
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "content-type",
        "content-transfer-encoding",
        "to",
        "from",
        "subject",
        "reply-to",
        "cc",
        "bcc",
    }
)
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
MAX_SEND_AT_AHEAD_S = 72 * 3600
# SendGrid caps a whole request at 30 MB.
MAX_BODY_BYTES = 30 * 1024 * 1024
UNAUTHORIZED_MESSAGE = "The provided authorization grant is invalid, expired, or revoked"
HELP_ROOT = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
RATE_LIMIT = 600


@dataclass(frozen=True)
class FieldError:
    message: str
    field: str | None
    help: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"message": self.message, "field": self.field, "help": self.help}


def error_response(status: int, errors: list[FieldError]) -> JSONResponse:
    return JSONResponse({"errors": [error.to_json() for error in errors]}, status_code=status)


def _invalid(field: str, message: str) -> FieldError:
    # The help anchor names the field without its indices, as SendGrid's own links do.
    anchor = ".".join(part for part in field.split(".") if not part.isdigit())
    return FieldError(message, field, f"{HELP_ROOT}#message.{anchor}")


def validate_mail_send(body: Any) -> list[FieldError]:
    """Every problem with a mail/send body, each naming its field path (`content.0.value`)."""
    if not isinstance(body, dict):
        return [FieldError("Bad Request", None)]
    errors = _sender_errors(body)
    errors += _personalization_errors(body.get("personalizations"))
    has_template = isinstance(body.get("template_id"), str) and bool(body["template_id"])
    errors += _subject_errors(body, has_template)
    errors += _content_errors(body.get("content"), has_template)
    errors += _reply_to_errors(body)
    errors += _attachment_errors(body.get("attachments"))
    errors += _category_errors(body.get("categories"))
    errors += _send_at_errors("send_at", body.get("send_at"))
    errors += _header_errors("headers", body.get("headers"))
    custom_args = body.get("custom_args")
    # The OpenAPI file types the top-level custom_args as a string; the API takes an object.
    if not isinstance(custom_args, str):
        errors += _custom_args_errors("custom_args", custom_args)
    return errors


def _header_errors(path: str, headers: Any) -> list[FieldError]:
    if headers is None:
        return []
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return [_invalid(path, "The headers parameter must be an object of strings.")]
    errors: list[FieldError] = []
    for name, value in headers.items():
        if name.lower() in RESERVED_HEADERS:
            errors.append(
                _invalid(path, f"The header {name} is reserved and cannot be set in headers.")
            )
        elif not _HEADER_NAME.fullmatch(name):
            errors.append(_invalid(path, f"The header name {name!r} is not a valid header name."))
        if any(character in value for character in "\r\n"):
            errors.append(_invalid(path, f"The header {name} cannot contain CRLF characters."))
    return errors


def _custom_args_errors(path: str, custom_args: Any) -> list[FieldError]:
    if custom_args is None:
        return []
    if not isinstance(custom_args, dict) or not all(
        isinstance(value, str) for value in custom_args.values()
    ):
        return [_invalid(path, "The custom_args parameter must be an object of strings.")]
    size = len(json.dumps(custom_args, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_CUSTOM_ARGS_BYTES:
        return [
            _invalid(
                path, f"The custom_args may not exceed {MAX_CUSTOM_ARGS_BYTES} bytes in total."
            )
        ]
    return []


def _sender_errors(body: dict[str, Any]) -> list[FieldError]:
    sender = body.get("from")
    if not isinstance(sender, dict) or "email" not in sender:
        return [
            _invalid(
                "from.email",
                "The from object must be provided for every email send. It is an object that "
                "requires the email parameter, but may also contain a name parameter.",
            )
        ]
    return _mailbox_errors("from", sender, "The from email does not contain a valid address.")


def _mailbox_errors(path: str, mailbox: Any, message: str) -> list[FieldError]:
    if not isinstance(mailbox, dict) or not is_valid_address(mailbox.get("email")):
        return [_invalid(f"{path}.email", message)]
    name = mailbox.get("name")
    if name is not None and not isinstance(name, str):
        return [_invalid(f"{path}.name", "The name must be a string.")]
    return []


def _personalization_errors(personalizations: Any) -> list[FieldError]:
    if not isinstance(personalizations, list) or not personalizations:
        return [
            _invalid(
                "personalizations",
                "The personalizations field is required and must have at least one "
                "personalization.",
            )
        ]
    if len(personalizations) > MAX_PERSONALIZATIONS:
        return [
            _invalid(
                "personalizations",
                f"The personalizations field may have at most {MAX_PERSONALIZATIONS} "
                "personalizations.",
            )
        ]
    errors: list[FieldError] = []
    recipients = 0
    for index, personalization in enumerate(personalizations):
        path = f"personalizations.{index}"
        if not isinstance(personalization, dict):
            errors.append(_invalid(path, "Each personalization must be an object."))
            continue
        to = personalization.get("to")
        if not isinstance(to, list) or not to:
            errors.append(
                _invalid(
                    f"{path}.to",
                    "The to array is required for all personalization objects, and must have "
                    "at least one email object with a valid email address.",
                )
            )
        seen: dict[str, str] = {}
        for kind in ("to", "cc", "bcc"):
            mailboxes = personalization.get(kind)
            if mailboxes is None or (kind == "to" and (not isinstance(to, list) or not to)):
                continue
            if not isinstance(mailboxes, list) or not mailboxes:
                errors.append(
                    _invalid(
                        f"{path}.{kind}",
                        f"The {kind} array, if present, must have at least one email object "
                        "with a valid email address.",
                    )
                )
                continue
            recipients += len(mailboxes)
            errors += _recipient_errors(f"{path}.{kind}", mailboxes, seen)
        subject = personalization.get("subject")
        if subject is not None and (not isinstance(subject, str) or not subject):
            errors.append(_invalid(f"{path}.subject", "The subject must be a non-empty string."))
        if "from" in personalization:
            errors += _mailbox_errors(
                f"{path}.from",
                personalization["from"],
                "The from email does not contain a valid address.",
            )
        errors += _send_at_errors(f"{path}.send_at", personalization.get("send_at"))
        errors += _header_errors(f"{path}.headers", personalization.get("headers"))
        errors += _custom_args_errors(f"{path}.custom_args", personalization.get("custom_args"))
    if recipients > MAX_RECIPIENTS:
        errors.append(
            _invalid(
                "personalizations",
                f"The total number of recipients must be no more than {MAX_RECIPIENTS}. This "
                "includes all recipients in to, cc and bcc, across every personalization.",
            )
        )
    return errors


def _recipient_errors(path: str, mailboxes: list[Any], seen: dict[str, str]) -> list[FieldError]:
    errors: list[FieldError] = []
    for index, mailbox in enumerate(mailboxes):
        found = _mailbox_errors(f"{path}.{index}", mailbox, "Does not contain a valid address.")
        if found:
            errors += found
            continue
        address = str(mailbox["email"]).lower()
        if address in seen:
            errors.append(
                _invalid(
                    path.rsplit(".", 1)[0],
                    "Each email address in the personalization block should be unique between "
                    f"to, cc, and bcc. We found the first duplicate instance of [{address}] in "
                    f"the {path} field.",
                )
            )
        seen[address] = path
    return errors


def _subject_errors(body: dict[str, Any], has_template: bool) -> list[FieldError]:
    subject = body.get("subject")
    if subject is not None:
        if not isinstance(subject, str) or not subject:
            return [_invalid("subject", "The subject must be a non-empty string.")]
        return []
    personalizations = body.get("personalizations")
    each_has_subject = isinstance(personalizations, list) and all(
        isinstance(p, dict) and isinstance(p.get("subject"), str) and p["subject"]
        for p in personalizations
    )
    if has_template or each_has_subject:
        return []
    return [
        _invalid(
            "subject",
            "The subject is required. You can get around this requirement if you use a template "
            "with a subject defined or if every personalization has a subject defined.",
        )
    ]


def _content_errors(content: Any, has_template: bool) -> list[FieldError]:
    if content is None and has_template:
        return []
    if not isinstance(content, list) or not content:
        return [
            _invalid(
                "content",
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block.",
            )
        ]
    errors: list[FieldError] = []
    for index, block in enumerate(content):
        path = f"content.{index}"
        if not isinstance(block, dict):
            errors.append(_invalid(path, "Each content block must be an object."))
            continue
        kind = block.get("type")
        if not isinstance(kind, str) or not kind:
            errors.append(
                _invalid(
                    f"{path}.type",
                    "The content type must be provided and be a string at least one character "
                    "in length.",
                )
            )
        elif any(character in kind for character in ";\r\n"):
            errors.append(
                _invalid(f"{path}.type", "The content type cannot contain ';', or CRLF characters.")
            )
        elif kind == "text/plain" and index != 0:
            errors.append(
                _invalid(
                    f"{path}.type",
                    "If present, text/plain content must be first, followed by any other content.",
                )
            )
        value = block.get("value")
        if not isinstance(value, str) or not value:
            errors.append(
                _invalid(
                    f"{path}.value",
                    "The content value must be a string at least one character in length.",
                )
            )
    return errors


def _reply_to_errors(body: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    if "reply_to" in body and "reply_to_list" in body:
        errors.append(
            _invalid(
                "reply_to",
                "You can use either the reply_to property or reply_to_list property but not both.",
            )
        )
    if "reply_to" in body:
        errors += _mailbox_errors(
            "reply_to", body["reply_to"], "The reply_to email does not contain a valid address."
        )
    reply_to_list = body.get("reply_to_list")
    if reply_to_list is not None:
        if not isinstance(reply_to_list, list) or not reply_to_list:
            errors.append(
                _invalid("reply_to_list", "The reply_to_list must list at least one address.")
            )
        else:
            for index, mailbox in enumerate(reply_to_list):
                errors += _mailbox_errors(
                    f"reply_to_list.{index}", mailbox, "Does not contain a valid address."
                )
    return errors


def _attachment_errors(attachments: Any) -> list[FieldError]:
    if attachments is None:
        return []
    if not isinstance(attachments, list):
        return [_invalid("attachments", "The attachments parameter must be an array.")]
    errors: list[FieldError] = []
    for index, attachment in enumerate(attachments):
        path = f"attachments.{index}"
        if not isinstance(attachment, dict):
            errors.append(_invalid(path, "Each attachment must be an object."))
            continue
        content = attachment.get("content")
        if not isinstance(content, str) or not content:
            errors.append(_invalid(f"{path}.content", "The attachment content is required."))
        elif not _is_base64(content):
            errors.append(
                _invalid(f"{path}.content", "The attachment content must be base64 encoded.")
            )
        filename = attachment.get("filename")
        if not isinstance(filename, str) or not filename:
            errors.append(_invalid(f"{path}.filename", "The attachment filename is required."))
        kind = attachment.get("type")
        if kind is not None and (
            not isinstance(kind, str) or not kind or any(c in kind for c in ";\r\n")
        ):
            errors.append(
                _invalid(
                    f"{path}.type",
                    "The attachment type must be a non-empty string without ';' or CRLF.",
                )
            )
        disposition = attachment.get("disposition")
        if disposition is not None and disposition not in ("inline", "attachment"):
            errors.append(
                _invalid(
                    f"{path}.disposition",
                    "The disposition must be either 'inline' or 'attachment'.",
                )
            )
        content_id = attachment.get("content_id")
        if disposition == "inline" and not (isinstance(content_id, str) and content_id):
            errors.append(
                _invalid(
                    f"{path}.content_id",
                    "The content_id parameter is required if disposition is set to inline.",
                )
            )
        elif content_id is not None and (
            not isinstance(content_id, str) or any(c in content_id for c in "; \r\n")
        ):
            errors.append(
                _invalid(
                    f"{path}.content_id",
                    "The content_id must be a string without ';', spaces or CRLF.",
                )
            )
    return errors


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _category_errors(categories: Any) -> list[FieldError]:
    if categories is None:
        return []
    if (
        not isinstance(categories, list)
        or len(categories) > MAX_CATEGORIES
        or not all(isinstance(c, str) and len(c) <= MAX_CATEGORY_CHARS for c in categories)
        or len(set(categories)) != len(categories)
    ):
        return [
            _invalid(
                "categories",
                f"The categories must be at most {MAX_CATEGORIES} unique strings of at most "
                f"{MAX_CATEGORY_CHARS} characters.",
            )
        ]
    return []


def _send_at_errors(path: str, send_at: Any) -> list[FieldError]:
    if send_at is None:
        return []
    if not isinstance(send_at, int) or isinstance(send_at, bool):
        return [_invalid(path, "The send_at parameter must be a unix timestamp.")]
    if send_at > time.time() + MAX_SEND_AT_AHEAD_S:
        return [_invalid(path, "The send_at parameter cannot be more than 72 hours ahead.")]
    return []


class SendGridWire:
    """Answers like SendGrid's mail/send."""

    name = NAME

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def answer(self, behaviour: Behaviour, request: SendRequest) -> Answer:
        if behaviour.mode is Mode.ERROR:
            return Answer(self._injected_error(behaviour.error_status))
        if behaviour.mode is Mode.REJECT:
            return Answer(
                error_response(
                    400,
                    [
                        _invalid(
                            "personalizations.0.to.0.email",
                            "Does not contain a valid address. (rejection injected by the stub)",
                        )
                    ],
                )
            )
        if not self._is_authorized(request.headers.get("authorization", "")):
            return Answer(error_response(401, [FieldError(UNAUTHORIZED_MESSAGE, None)]))
        if request.size > MAX_BODY_BYTES:
            return Answer(error_response(413, [FieldError("content too large", None)]))
        if request.malformed:
            return Answer(error_response(400, [FieldError("Bad Request", None)]))
        errors = validate_mail_send(request.body)
        if errors:
            return Answer(error_response(400, errors))
        message_id = secrets.token_urlsafe(16)
        response = Response(status_code=202, headers={"X-Message-Id": message_id})
        return Answer(response, message_id=message_id)

    def _is_authorized(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and token.strip() == self._api_key

    @staticmethod
    def _injected_error(status: int) -> JSONResponse:
        response = error_response(status, [FieldError(status_phrase(status).lower(), None)])
        if status == 429:
            # A real 429 tells the client when the window resets; the processor may read it.
            response.headers["X-RateLimit-Limit"] = str(RATE_LIMIT)
            response.headers["X-RateLimit-Remaining"] = "0"
            response.headers["X-RateLimit-Reset"] = str(int(time.time()) + 60)
        return response
