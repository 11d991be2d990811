"""ElasticEmail v4 `POST /v4/emails/transactional`: key check, validation, idempotent replays."""

import base64
import binascii
import re
import secrets
import uuid
from typing import Any

from fastapi.responses import JSONResponse, Response

from mailstack_stubs.addresses import is_valid_mailbox
from mailstack_stubs.behaviour import Behaviour, Mode, StoredResponse, StubState, fingerprint
from mailstack_stubs.sending import Answer, SendRequest, status_phrase

NAME = "elasticemail"
SEND_PATH = "/v4/emails/transactional"
API_KEY_HEADER = "x-elasticemail-apikey"
IDEMPOTENCY_HEADER = "idempotency-key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255
BODY_CONTENT_TYPES = frozenset({"HTML", "PlainText", "AMP", "CSS"})
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
# Error texts are the stub's own: ElasticEmail documents the `{"Error": ...}` shape, not them.
UNAUTHORIZED_MESSAGE = "Access Denied. The API key is missing, invalid or revoked."
REJECTED_MESSAGE = "Invalid recipient address (rejection injected by the stub)."


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"Error": message}, status_code=status)


def validate_transactional(body: Any) -> list[str]:
    """Every problem with an EmailTransactionalMessageData body, as `Field.Path: message`."""
    if not isinstance(body, dict):
        return ["The request body must be a JSON object."]
    problems: list[str] = []
    recipients = body.get("Recipients")
    if not isinstance(recipients, dict):
        problems.append("Recipients: required object with at least one address in To.")
    else:
        to = recipients.get("To")
        if not isinstance(to, list) or not to:
            problems.append("Recipients.To: required list with at least one address.")
        else:
            problems += _address_list_problems("Recipients.To", to)
        for name in ("CC", "BCC"):
            copies = recipients.get(name)
            if copies is None:
                continue
            if not isinstance(copies, list):
                problems.append(f"Recipients.{name}: must be a list of addresses.")
            else:
                problems += _address_list_problems(f"Recipients.{name}", copies)
    content = body.get("Content")
    if not isinstance(content, dict):
        problems.append("Content: required object with at least From.")
    else:
        problems += _content_problems(content)
    options = body.get("Options")
    if options is not None and not isinstance(options, dict):
        problems.append("Options: must be an object.")
    elif options is not None:
        offset = options.get("TimeOffset")
        if offset is not None and (not isinstance(offset, int) or isinstance(offset, bool)):
            problems.append("Options.TimeOffset: must be an integer number of minutes.")
        for name in ("ChannelName", "PoolName"):
            value = options.get(name)
            if value is not None and not isinstance(value, str):
                problems.append(f"Options.{name}: must be a string.")
    return problems


def _address_list_problems(path: str, addresses: list[Any]) -> list[str]:
    return [
        f"{path}[{index}]: '{address}' is not a valid email address."
        for index, address in enumerate(addresses)
        if not is_valid_mailbox(address)
    ]


def _content_problems(content: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    sender = content.get("From")
    if sender is None:
        problems.append("Content.From: required sender address.")
    elif not is_valid_mailbox(sender):
        problems.append(f"Content.From: '{sender}' is not a valid email address.")
    for name in ("Subject", "ReplyTo", "TemplateName", "Postback", "EnvelopeFrom"):
        value = content.get(name)
        if value is not None and not isinstance(value, str):
            problems.append(f"Content.{name}: must be a string.")
    reply_to = content.get("ReplyTo")
    if isinstance(reply_to, str) and not is_valid_mailbox(reply_to):
        problems.append(f"Content.ReplyTo: '{reply_to}' is not a valid email address.")
    body = content.get("Body")
    if body is not None:
        if not isinstance(body, list):
            problems.append("Content.Body: must be a list of body parts.")
        else:
            for index, part in enumerate(body):
                problems += _body_part_problems(f"Content.Body[{index}]", part)
    problems += _header_problems(content.get("Headers"))
    merge = content.get("Merge")
    if merge is not None and (
        not isinstance(merge, dict) or not all(isinstance(v, str) for v in merge.values())
    ):
        problems.append("Content.Merge: must be an object of string values.")
    attachments = content.get("Attachments")
    if attachments is not None:
        if not isinstance(attachments, list):
            problems.append("Content.Attachments: must be a list.")
        else:
            for index, attachment in enumerate(attachments):
                problems += _attachment_problems(f"Content.Attachments[{index}]", attachment)
    return problems


def _header_problems(headers: Any) -> list[str]:
    if headers is None:
        return []
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return ["Content.Headers: must be an object of string values."]
    problems = []
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            problems.append(f"Content.Headers: '{name}' is not a valid header name.")
        if any(character in value for character in "\r\n"):
            problems.append(f"Content.Headers.{name}: must not contain line breaks.")
    return problems


def _attachment_problems(path: str, attachment: Any) -> list[str]:
    """MessageAttachment: BinaryContent (base64) and Name required, ContentType optional."""
    if not isinstance(attachment, dict):
        return [f"{path}: must be an object."]
    problems = []
    content = attachment.get("BinaryContent")
    if not isinstance(content, str) or not content:
        problems.append(f"{path}.BinaryContent: required base64 string.")
    else:
        try:
            base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"{path}.BinaryContent: is not valid base64.")
    name = attachment.get("Name")
    if not isinstance(name, str) or not name:
        problems.append(f"{path}.Name: required string.")
    content_type = attachment.get("ContentType")
    if content_type is not None and not isinstance(content_type, str):
        problems.append(f"{path}.ContentType: must be a string.")
    return problems


def _body_part_problems(path: str, part: Any) -> list[str]:
    if not isinstance(part, dict):
        return [f"{path}: must be an object with ContentType and Content."]
    problems: list[str] = []
    if part.get("ContentType") not in BODY_CONTENT_TYPES:
        allowed = ", ".join(sorted(BODY_CONTENT_TYPES))
        problems.append(f"{path}.ContentType: must be one of {allowed}.")
    if not isinstance(part.get("Content"), str):
        problems.append(f"{path}.Content: required string.")
    charset = part.get("Charset")
    if charset is not None and not isinstance(charset, str):
        problems.append(f"{path}.Charset: must be a string.")
    return problems


class ElasticEmailWire:
    """Answers like ElasticEmail; keeps first answers per Idempotency-Key in the stub state."""

    name = NAME

    def __init__(self, api_key: str, state: StubState) -> None:
        self._api_key = api_key
        self._state = state

    def answer(self, behaviour: Behaviour, request: SendRequest) -> Answer:
        if behaviour.mode is Mode.ERROR:
            status = behaviour.error_status
            return Answer(error_response(status, status_phrase(status)))
        if behaviour.mode is Mode.REJECT:
            return Answer(error_response(400, REJECTED_MESSAGE))
        if request.headers.get(API_KEY_HEADER) != self._api_key:
            return Answer(error_response(401, UNAUTHORIZED_MESSAGE))
        if request.malformed:
            return Answer(error_response(400, "The request body is not valid JSON."))
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None:
            replayed = self._replay(key, request.body)
            if replayed is not None:
                return replayed
        problems = validate_transactional(request.body)
        if problems:
            return Answer(error_response(400, " ".join(problems)))
        return self._accept(key, request.body)

    def _replay(self, key: str, body: Any) -> Answer | None:
        if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
            return Answer(error_response(400, "Idempotency-Key must be 1-255 characters long."))
        stored = self._state.stored_response(key)
        if stored is None:
            return None
        if stored.body_fingerprint != fingerprint(body):
            return Answer(
                error_response(409, "Idempotency-Key was already used with a different body.")
            )
        response = Response(stored.content, stored.status, stored.headers)
        return Answer(response, replay=True, message_id=stored.message_id)

    def _accept(self, key: str | None, body: Any) -> Answer:
        message_id = secrets.token_urlsafe(16)
        response = JSONResponse({"TransactionID": str(uuid.uuid4()), "MessageID": message_id})
        if key is not None:
            # Only accepted sends are kept: an injected failure or a bad key executed
            # nothing, so a retry with the same key must be tried for real.
            self._state.store_response(
                key,
                StoredResponse(
                    body_fingerprint=fingerprint(body),
                    status=response.status_code,
                    content=bytes(response.body),
                    headers={"content-type": "application/json"},
                    message_id=message_id,
                ),
            )
        return Answer(response, message_id=message_id)
