"""Events like the real services post them: after an accepted send, and on demand.

After each accepted send the stub posts one event per recipient to the URL it was started with:
`delivered`, or for a recipient whose local part is `bounce`, `complaint` or `deferred` a hard
bounce, a spam report or a deferral. `POST /_stub/events` posts any event for a recorded
message; the same (message, event, recipient) is always the same provider event, with the same
event id, so asking twice is a provider's retry. Posting happens in the background and a failure
is recorded, never raised: the send's answer never waits on it.

SendGrid's events are a JSON array signed as SendGrid signs its Event Webhook (ECDSA P-256 over
the timestamp followed by the body, base64 DER in `X-Twilio-Email-Event-Webhook-Signature`).
ElasticEmail's are its HTTP web notification: a GET whose query parameters are the event; the
URL the stub is given carries the shared secret, as the one configured at ElasticEmail would.
"""

import asyncio
import base64
import binascii
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailstack_stubs.addresses import mailbox_address
from mailstack_stubs.behaviour import RecordedSend

logger = logging.getLogger("mailstack_stubs")

EventName = Literal["delivered", "bounce", "dropped", "spamreport", "deferred", "open", "click"]
EVENT_NAMES: tuple[str, ...] = get_args(EventName)
# The recipient's local part that makes the automatic event something else than `delivered`.
AUTOMATIC_EVENTS: dict[str, EventName] = {
    "bounce": "bounce",
    "complaint": "spamreport",
    "deferred": "deferred",
}
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
POST_TIMEOUT_S = 5.0
# The query parameter of ElasticEmail's notification URL that holds the shared secret.
SECRET_PARAMETER = "secret"  # noqa: S105 - a parameter name
CLICKED_URL = "https://example.org/stub-link"


class UnknownMessageError(LookupError):
    """No accepted send has this message id (or the recipient is not one of its)."""


def load_private_key(text: str) -> ec.EllipticCurvePrivateKey:
    """An EC P-256 private key as PEM, or as base64 of its DER (PKCS#8), one line for env files."""
    stripped = text.strip()
    try:
        if stripped.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(stripped.encode("ascii"), password=None)
        else:
            der = base64.b64decode(stripped, validate=True)
            key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, binascii.Error) as error:
        raise ValueError(f"not an EC private key in PEM or base64 DER: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the events signing key must be an EC P-256 key")
    return key


def automatic_event(recipient: str) -> EventName:
    return AUTOMATIC_EVENTS.get(recipient.split("@", 1)[0].lower(), "delivered")


@dataclass(frozen=True)
class Message:
    """What an event needs of an accepted send."""

    message_id: str
    recipients: tuple[str, ...]
    carried: dict[str, Any]  # SendGrid: custom args and categories; ElasticEmail: postback...


@dataclass(frozen=True)
class PreparedEvent:
    """One provider event, fixed once: every post of it sends the same event."""

    key: tuple[str, str, str]
    event_id: str
    message_id: str
    event: EventName
    recipient: str
    # SendGrid: the JSON body; ElasticEmail: the query parameters.
    body: bytes = b""
    parameters: tuple[tuple[str, str], ...] = ()


@dataclass
class PostedEvent:
    event_id: str
    message_id: str
    event: str
    recipient: str
    posted_at: str
    method: str
    url: str
    body: str
    headers: dict[str, str]
    status: int | None = None
    answer: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class EventWire(Protocol):
    """How one provider formats and posts its events."""

    def message(self, send: RecordedSend) -> Message: ...

    def prepare(self, message: Message, event: EventName, recipient: str) -> PreparedEvent: ...

    def request(self, url: str, prepared: PreparedEvent) -> tuple[str, str, bytes, dict[str, str]]:
        """(method, url, body, headers) of one post of `prepared`."""


def _recipients(*groups: Any) -> tuple[str, ...]:
    found: list[str] = []
    for group in groups:
        for entry in group if isinstance(group, list) else []:
            address = entry.get("email") if isinstance(entry, dict) else mailbox_address(entry)
            if isinstance(address, str) and address not in found:
                found.append(address)
    return tuple(found)


class SendGridEvents:
    def __init__(self, private_key: ec.EllipticCurvePrivateKey | None) -> None:
        self._key = private_key

    def message(self, send: RecordedSend) -> Message:
        body = send.body if isinstance(send.body, dict) else {}
        personalizations = [p for p in body.get("personalizations", []) if isinstance(p, dict)]
        recipients = _recipients(
            *(p.get(kind) for p in personalizations for kind in ("to", "cc", "bcc"))
        )
        carried: dict[str, Any] = dict(body.get("custom_args") or {})
        for personalization in personalizations:
            carried |= personalization.get("custom_args") or {}
        if body.get("categories"):
            carried["category"] = list(body["categories"])
        return Message(send.message_id or "", recipients, carried)

    def prepare(self, message: Message, event: EventName, recipient: str) -> PreparedEvent:
        item: dict[str, Any] = {
            "email": recipient,
            "timestamp": int(time.time()),
            "event": event,
            "sg_event_id": secrets.token_urlsafe(16),
            "sg_message_id": f"{message.message_id}.filterdrecv-stub-{secrets.token_hex(4)}.0",
            "smtp-id": f"<{message.message_id}@stub.sendgrid.test>",
            **message.carried,
        }
        item |= _SENDGRID_DETAILS.get(event, {})
        body = json.dumps([item]).encode()
        key = (message.message_id, event, recipient)
        return PreparedEvent(key, item["sg_event_id"], message.message_id, event, recipient, body)

    def request(self, url: str, prepared: PreparedEvent) -> tuple[str, str, bytes, dict[str, str]]:
        headers = {"Content-Type": "application/json"}
        if self._key is not None:
            timestamp = str(int(time.time()))
            signature = self._key.sign(
                timestamp.encode() + prepared.body, ec.ECDSA(hashes.SHA256())
            )
            headers[SIGNATURE_HEADER] = base64.b64encode(signature).decode()
            headers[TIMESTAMP_HEADER] = timestamp
        return "POST", url, prepared.body, headers


_SENDGRID_DETAILS: dict[str, dict[str, Any]] = {
    "delivered": {"response": "250 2.0.0 OK (stub)"},
    "bounce": {
        "type": "bounce",
        "status": "5.1.1",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist (stub)",
        "bounce_classification": "Invalid Address",
    },
    "dropped": {"reason": "Bounced Address"},
    "deferred": {"response": "451 4.7.1 Greylisted, try again later (stub)", "attempt": "1"},
    "click": {"url": CLICKED_URL, "useragent": "mailstack-stub"},
    "open": {"useragent": "mailstack-stub", "sg_machine_open": False},
}

# ElasticEmail's status (and bounce category) for each event.
_ELASTICEMAIL_STATUS: dict[str, tuple[str, str]] = {
    "delivered": ("Sent", ""),
    "bounce": ("Error", "NoMailbox"),
    "dropped": ("Error", "AccountProblem"),
    "spamreport": ("AbuseReport", ""),
    "deferred": ("Error", "GreyListed"),
    "open": ("Opened", ""),
    "click": ("Clicked", ""),
}


class ElasticEmailEvents:
    def message(self, send: RecordedSend) -> Message:
        body = send.body if isinstance(send.body, dict) else {}
        recipients = body.get("Recipients") or {}
        content = body.get("Content") or {}
        options = body.get("Options") or {}
        carried = {
            "from": str(content.get("From", "")),
            "subject": str(content.get("Subject", "")),
            "channel": str(options.get("ChannelName", "")),
            "postback": str(content.get("Postback", "")),
        }
        return Message(
            send.message_id or "",
            _recipients(*(recipients.get(kind) for kind in ("To", "CC", "BCC"))),
            carried,
        )

    def prepare(self, message: Message, event: EventName, recipient: str) -> PreparedEvent:
        status, category = _ELASTICEMAIL_STATUS[event]
        parameters = {
            **message.carried,
            "messageid": message.message_id,
            "to": recipient,
            "date": datetime.now(UTC).strftime("%m/%d/%Y %I:%M:%S %p"),
            "status": status,
            "category": category,
            "account": "stub@elasticemail.test",
        }
        if event == "click":
            parameters["target"] = CLICKED_URL
        items = tuple((name, value) for name, value in parameters.items() if value)
        # ElasticEmail's notification has no id: the stub names it for its own list.
        event_id = f"{message.message_id}:{event}:{recipient}"
        key = (message.message_id, event, recipient)
        return PreparedEvent(key, event_id, message.message_id, event, recipient, b"", items)

    def request(self, url: str, prepared: PreparedEvent) -> tuple[str, str, bytes, dict[str, str]]:
        parts = urlsplit(url)
        query = [*parse_qsl(parts.query, keep_blank_values=True), *prepared.parameters]
        return "GET", urlunsplit(parts._replace(query=urlencode(query))), b"", {}


def _redacted(url: str) -> str:
    """The URL without its query's values of `secret` (the list is readable by anyone)."""
    parts = urlsplit(url)
    query = [
        (name, "***" if name == SECRET_PARAMETER else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass
class EventEmitter:
    """Posts one stub's events to `url` (None: events are prepared and listed, never posted)."""

    wire: EventWire
    url: str | None
    _prepared: dict[tuple[str, str, str], PreparedEvent] = field(default_factory=dict)
    _posted: list[PostedEvent] = field(default_factory=list)
    _tasks: set["asyncio.Task[None]"] = field(default_factory=set)
    _client: httpx.AsyncClient | None = None

    def after_send(self, send: RecordedSend) -> None:
        """The events a real provider would post for an accepted send."""
        message = self.wire.message(send)
        for recipient in message.recipients:
            self._schedule(self._prepare(message, automatic_event(recipient), recipient))

    def trigger(
        self, sends: list[RecordedSend], message_id: str, event: EventName, recipient: str | None
    ) -> PreparedEvent:
        """Post `event` for a recorded message (its first recipient unless `recipient`)."""
        accepted = [s for s in sends if s.message_id == message_id and 200 <= s.status < 300]
        if not accepted:
            raise UnknownMessageError(f"no accepted send has message id {message_id!r}")
        message = self.wire.message(accepted[0])
        chosen = recipient or (message.recipients[0] if message.recipients else None)
        if chosen is None or chosen not in message.recipients:
            raise UnknownMessageError(f"{recipient!r} is not a recipient of {message_id!r}")
        prepared = self._prepare(message, event, chosen)
        self._schedule(prepared)
        return prepared

    def posted(self) -> list[PostedEvent]:
        return list(self._posted)

    def reset(self) -> None:
        self._prepared.clear()
        self._posted.clear()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def drain(self) -> None:
        """Wait until every post started so far has its answer (for tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _prepare(self, message: Message, event: EventName, recipient: str) -> PreparedEvent:
        key = (message.message_id, event, recipient)
        if key not in self._prepared:
            self._prepared[key] = self.wire.prepare(message, event, recipient)
        return self._prepared[key]

    def _schedule(self, prepared: PreparedEvent) -> None:
        if self.url is None:
            return
        task = asyncio.get_running_loop().create_task(self._post(self.url, prepared))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, prepared: PreparedEvent) -> None:
        method, target, body, headers = self.wire.request(url, prepared)
        record = PostedEvent(
            event_id=prepared.event_id,
            message_id=prepared.message_id,
            event=prepared.event,
            recipient=prepared.recipient,
            posted_at=datetime.now(UTC).isoformat(),
            method=method,
            url=_redacted(target),
            body=body.decode(),
            headers=headers,
        )
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=POST_TIMEOUT_S)
        try:
            response = await self._client.request(method, target, content=body, headers=headers)
        except httpx.HTTPError as error:
            record.error = f"{type(error).__name__}: {error}"
        else:
            record.status, record.answer = response.status_code, response.text[:2000]
        self._posted.append(record)
        logger.info(
            "stub.event event=%s message_id=%s status=%s error=%s",
            prepared.event,
            prepared.message_id,
            record.status,
            record.error,
        )
