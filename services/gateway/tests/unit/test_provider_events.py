"""Provider events in: SendGrid's signature as SendGrid signs, the mapping of both providers'
events, and the forward-only status rule (no database: an in-memory event store)."""

import base64
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailstack_core.status import DELIVERY_ORDER, EmailStatus
from mailstack_gateway.event_signatures import (
    EventAuthenticationError,
    InvalidPublicKeyError,
    SendGridVerifier,
    SharedSecretVerifier,
    load_public_key,
)
from mailstack_gateway.provider_events import (
    EventResult,
    MalformedEventsError,
    MatchedEmail,
    ProviderEvent,
    next_status,
    parse_elasticemail,
    parse_sendgrid,
    record_events,
    sendgrid_message_id,
)

NOW = 1_780_000_000
EMAIL_ID = uuid.UUID("6f1c1d9e-2f7a-4c44-9a53-1f2f0b1c2d3e")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _der_base64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def _sign(key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


BODY = json.dumps([{"event": "delivered", "sg_event_id": "ev-1"}]).encode()


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return _key()


@pytest.fixture
def verifier(key: ec.EllipticCurvePrivateKey) -> SendGridVerifier:
    return SendGridVerifier(load_public_key(_der_base64(key)), max_age_seconds=300)


def test_a_body_signed_with_the_key_verifies(
    key: ec.EllipticCurvePrivateKey, verifier: SendGridVerifier
) -> None:
    verifier.verify(_sign(key, str(NOW), BODY), str(NOW), BODY, NOW + 10)


def test_a_pem_key_is_taken_as_well_as_base64_der(key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    verifier = SendGridVerifier(load_public_key(pem.decode()), max_age_seconds=300)
    verifier.verify(_sign(key, str(NOW), BODY), str(NOW), BODY, NOW)


def test_a_tampered_body_is_refused(
    key: ec.EllipticCurvePrivateKey, verifier: SendGridVerifier
) -> None:
    signature = _sign(key, str(NOW), BODY)
    tampered = BODY.replace(b"delivered", b"bounce")
    with pytest.raises(EventAuthenticationError) as refused:
        verifier.verify(signature, str(NOW), tampered, NOW)
    assert refused.value.reason == "signature"


def test_a_changed_timestamp_is_refused(
    key: ec.EllipticCurvePrivateKey, verifier: SendGridVerifier
) -> None:
    signature = _sign(key, str(NOW), BODY)
    with pytest.raises(EventAuthenticationError, match="does not verify"):
        verifier.verify(signature, str(NOW + 1), BODY, NOW)


def test_a_signature_by_another_key_is_refused(verifier: SendGridVerifier) -> None:
    with pytest.raises(EventAuthenticationError) as refused:
        verifier.verify(_sign(_key(), str(NOW), BODY), str(NOW), BODY, NOW)
    assert refused.value.reason == "signature"


@pytest.mark.parametrize("skew", [301, -301, 86_400])
def test_a_stale_or_future_timestamp_is_refused_even_when_signed(
    key: ec.EllipticCurvePrivateKey, verifier: SendGridVerifier, skew: int
) -> None:
    with pytest.raises(EventAuthenticationError) as refused:
        verifier.verify(_sign(key, str(NOW), BODY), str(NOW), BODY, NOW + skew)
    assert refused.value.reason == "stale"


@pytest.mark.parametrize(
    ("signature", "timestamp", "reason"),
    [
        (None, str(NOW), "missing"),
        ("c2ln", None, "missing"),
        ("%%%", str(NOW), "malformed"),
        ("c2ln", "\uff11" * 10, "malformed"),  # digits, but not ASCII ones
        ("c2ln", "-1", "malformed"),
    ],
)
def test_missing_or_malformed_headers_are_refused(
    verifier: SendGridVerifier, signature: str | None, timestamp: str | None, reason: str
) -> None:
    with pytest.raises(EventAuthenticationError) as refused:
        verifier.verify(signature, timestamp, BODY, NOW)
    assert refused.value.reason == reason


def test_a_key_that_is_not_p256_is_refused_at_start() -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(InvalidPublicKeyError):
        load_public_key(_der_base64(other))  # type: ignore[arg-type]
    with pytest.raises(InvalidPublicKeyError):
        load_public_key("not a key")


def test_the_shared_secret_must_match_exactly() -> None:
    verifier = SharedSecretVerifier("s3cret")
    verifier.verify("s3cret")
    for presented in (None, "", "s3cret ", "S3CRET"):
        with pytest.raises(EventAuthenticationError):
            verifier.verify(presented)


# -- mapping ------------------------------------------------------------------------------------


def _sendgrid(**fields: Any) -> ProviderEvent:
    item = {"email": "User@Example.org", "sg_event_id": "ev-1", **fields}
    (event,) = parse_sendgrid(json.dumps([item]).encode())
    return event


@pytest.mark.parametrize(
    ("fields", "status", "bounce"),
    [
        ({"event": "delivered"}, EmailStatus.DELIVERED, None),
        ({"event": "deferred", "attempt": "1"}, EmailStatus.DEFERRED, None),
        ({"event": "bounce", "type": "bounce"}, EmailStatus.BOUNCED, "hard"),
        ({"event": "bounce", "type": "blocked"}, EmailStatus.BOUNCED, "soft"),
        ({"event": "dropped", "reason": "Bounced Address"}, EmailStatus.BOUNCED, "hard"),
        ({"event": "spamreport"}, EmailStatus.COMPLAINED, None),
        ({"event": "open"}, EmailStatus.OPENED, None),
        ({"event": "click", "url": "https://x.test"}, EmailStatus.CLICKED, None),
        ({"event": "unsubscribe"}, EmailStatus.UNSUBSCRIBED, None),
        ({"event": "group_unsubscribe"}, EmailStatus.UNSUBSCRIBED, None),
        ({"event": "processed"}, None, None),
    ],
)
def test_sendgrid_events_map_onto_one_vocabulary(
    fields: dict[str, Any], status: EmailStatus | None, bounce: str | None
) -> None:
    event = _sendgrid(**fields)
    assert (event.status, event.bounce) == (status, bounce)
    assert event.recipient == "user@example.org"


def test_a_sendgrid_event_carries_its_ids_and_the_raw_event() -> None:
    event = _sendgrid(
        event="bounce",
        type="bounce",
        sg_message_id="abc123XYZ.filterdrecv-5645d9c87f-2k8x7-1-5F7E.0",
        mailstack_email_id=str(EMAIL_ID),
    )
    assert event.event_id == "ev-1"
    assert event.message_id == "abc123XYZ"
    assert event.email_id == EMAIL_ID
    assert event.suppression_reason == "hard_bounce"
    detail = event.detail()
    assert detail["raw"]["type"] == "bounce"
    assert (detail["event"], detail["bounce"], detail["outcome"]) == (
        "bounce",
        "hard",
        "provider_event",
    )


def test_sendgrid_message_ids_without_a_filter_suffix_are_kept_whole() -> None:
    assert sendgrid_message_id("plain-id") == "plain-id"
    assert sendgrid_message_id(None) is None


def test_a_sendgrid_event_without_an_id_gets_a_stable_one() -> None:
    item = {"event": "open", "email": "a@example.org", "timestamp": NOW}
    first, second = (parse_sendgrid(json.dumps([item]).encode())[0] for _ in range(2))
    assert first.event_id == second.event_id


@pytest.mark.parametrize("body", [b"{}", b"not json", b'[1, "two"]'])
def test_a_sendgrid_body_that_is_not_an_array_of_events_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedEventsError):
        parse_sendgrid(body)


def _elasticemail(**parameters: str) -> ProviderEvent:
    return parse_elasticemail(
        {"to": "user@example.org", "messageid": "ee-1", "secret": "s", **parameters}
    )


@pytest.mark.parametrize(
    ("parameters", "status", "bounce"),
    [
        ({"status": "Sent"}, EmailStatus.DELIVERED, None),
        ({"status": "Opened"}, EmailStatus.OPENED, None),
        ({"status": "Clicked", "target": "https://x.test"}, EmailStatus.CLICKED, None),
        ({"status": "Unsubscribed"}, EmailStatus.UNSUBSCRIBED, None),
        ({"status": "AbuseReport"}, EmailStatus.COMPLAINED, None),
        ({"status": "Error", "category": "NoMailbox"}, EmailStatus.BOUNCED, "hard"),
        ({"status": "Error", "category": "DNSProblem"}, EmailStatus.BOUNCED, "hard"),
        ({"status": "Error", "category": "Spam"}, EmailStatus.BOUNCED, "soft"),
        ({"status": "Error", "category": "GreyListed"}, EmailStatus.DEFERRED, None),
        ({"status": "Error", "category": "Throttled"}, EmailStatus.DEFERRED, None),
        ({"status": "ReadyToSend"}, None, None),
    ],
)
def test_elasticemail_notifications_map_onto_one_vocabulary(
    parameters: dict[str, str], status: EmailStatus | None, bounce: str | None
) -> None:
    event = _elasticemail(**parameters)
    assert (event.status, event.bounce) == (status, bounce)


def test_an_elasticemail_notification_finds_its_email_by_the_postback() -> None:
    postback = json.dumps({"mailstack_email_id": str(EMAIL_ID), "tags": [], "metadata": {}})
    event = _elasticemail(status="AbuseReport", postback=postback)
    assert event.email_id == EMAIL_ID
    assert event.message_id == "ee-1"
    assert event.suppression_reason == "complaint"
    assert "secret" not in event.raw


def test_the_same_elasticemail_notification_has_the_same_id_and_another_one_another() -> None:
    first = _elasticemail(status="Sent", date="2026-12-02 00:00:00")
    again = _elasticemail(status="Sent", date="2026-12-02 00:00:00", secret="other")
    opened = _elasticemail(status="Opened", date="2026-12-02 00:00:00")
    assert first.event_id == again.event_id != opened.event_id


def test_an_elasticemail_notification_without_a_status_is_malformed() -> None:
    with pytest.raises(MalformedEventsError):
        parse_elasticemail({"messageid": "ee-1"})


# -- the forward-only rule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "before", [EmailStatus.SENT, EmailStatus.PROCESSING, EmailStatus.QUEUED, EmailStatus.FAILED]
)
def test_any_event_moves_an_email_that_has_none_yet(before: EmailStatus) -> None:
    for reported in DELIVERY_ORDER:
        assert next_status(before, reported) is reported


def test_the_status_only_moves_forward() -> None:
    assert next_status(EmailStatus.DEFERRED, EmailStatus.DELIVERED) is EmailStatus.DELIVERED
    assert next_status(EmailStatus.DELIVERED, EmailStatus.OPENED) is EmailStatus.OPENED
    assert next_status(EmailStatus.DELIVERED, EmailStatus.BOUNCED) is EmailStatus.BOUNCED
    assert next_status(EmailStatus.DELIVERED, EmailStatus.DEFERRED) is None
    assert next_status(EmailStatus.CLICKED, EmailStatus.OPENED) is None
    assert next_status(EmailStatus.OPENED, EmailStatus.OPENED) is None


@pytest.mark.parametrize("final", [EmailStatus.BOUNCED, EmailStatus.COMPLAINED])
def test_bounced_and_complained_are_final(final: EmailStatus) -> None:
    assert all(next_status(final, reported) is None for reported in DELIVERY_ORDER)


@pytest.mark.parametrize("never_sent", [EmailStatus.SCHEDULED, EmailStatus.CANCELED])
def test_an_email_never_sent_is_not_moved(never_sent: EmailStatus) -> None:
    assert next_status(never_sent, EmailStatus.DELIVERED) is None


@dataclass
class InMemoryEvents:
    """EventStore: emails by id, their history rows and the suppression list; a transaction's
    writes are kept only if it ends without an error."""

    emails: dict[uuid.UUID, MatchedEmail] = field(default_factory=dict)
    rows: list[tuple[uuid.UUID, EmailStatus, str]] = field(default_factory=list)
    suppressed: set[tuple[str, str, str]] = field(default_factory=set)

    async def find_email(self, event: ProviderEvent) -> MatchedEmail | None:
        return self.emails.get(event.email_id) if event.email_id else None

    async def append(self, email_id: uuid.UUID, event: ProviderEvent) -> bool:
        assert event.status is not None
        if any(row[2] == event.event_id for row in self.rows):
            return False
        self.rows.append((email_id, event.status, event.event_id))
        return True

    async def move_status(self, email_id: uuid.UUID, status: EmailStatus) -> None:
        email = self.emails[email_id]
        self.emails[email_id] = MatchedEmail(email.id, email.tenant_id, status)

    async def suppress(
        self, tenant_id: str, address: str, reason: str, event: ProviderEvent, email_id: uuid.UUID
    ) -> None:
        self.suppressed.add((tenant_id, address, reason))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator["InMemoryEvents"]:
        yield self


async def test_recording_applies_the_rules_event_by_event() -> None:
    store = InMemoryEvents({EMAIL_ID: MatchedEmail(EMAIL_ID, "acme", EmailStatus.SENT)})
    unknown = uuid.uuid4()
    items = [
        {"event": "processed", "sg_event_id": "p"},
        {"event": "open", "sg_event_id": "o", "mailstack_email_id": str(EMAIL_ID)},
        {"event": "delivered", "sg_event_id": "d", "mailstack_email_id": str(EMAIL_ID)},
        {"event": "delivered", "sg_event_id": "d", "mailstack_email_id": str(EMAIL_ID)},
        {"event": "delivered", "sg_event_id": "x", "mailstack_email_id": str(unknown)},
        {
            "event": "spamreport",
            "sg_event_id": "s",
            "email": "u@example.org",
            "mailstack_email_id": str(EMAIL_ID),
        },
    ]
    recorded = await record_events(parse_sendgrid(json.dumps(items).encode()), store)  # type: ignore[arg-type]

    assert recorded.results == [
        EventResult.IGNORED,
        EventResult.RECORDED,
        EventResult.RECORDED,
        EventResult.DUPLICATE,
        EventResult.UNKNOWN_EMAIL,
        EventResult.RECORDED,
    ]
    # The open came first (out of order): the later delivery is a row, not a step back.
    assert [row[1] for row in store.rows] == [
        EmailStatus.OPENED,
        EmailStatus.DELIVERED,
        EmailStatus.COMPLAINED,
    ]
    assert store.emails[EMAIL_ID].status is EmailStatus.COMPLAINED
    assert store.suppressed == {("acme", "u@example.org", "complaint")}
