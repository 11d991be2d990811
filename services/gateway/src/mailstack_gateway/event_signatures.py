"""Who may post provider events: SendGrid's signed Event Webhook, ElasticEmail's shared secret.

SendGrid signs each Event Webhook request with ECDSA over P-256 and SHA-256: the signed bytes are
the `X-Twilio-Email-Event-Webhook-Timestamp` header's value followed by the raw request body,
and the signature (base64 of its DER encoding) is in `X-Twilio-Email-Event-Webhook-Signature`.
Its verification key is shown in SendGrid's mail settings as base64 DER (SubjectPublicKeyInfo);
a PEM block is taken too. SendGrid documents no freshness window: one of `max_age_seconds` (in
either direction) refuses a replayed request.

ElasticEmail signs nothing: its notification URL carries a secret of our own, compared in
constant time.
"""

import base64
import binascii
import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


class EventAuthenticationError(Exception):
    """The request cannot be shown to come from the provider; `reason` is a metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidPublicKeyError(ValueError):
    """The configured verification key is not an EC P-256 public key."""


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's verification key: base64 DER as its settings page shows it, or PEM."""
    stripped = text.strip()
    try:
        if stripped.startswith("-----BEGIN"):
            key = load_pem_public_key(stripped.encode("ascii"))
        else:
            key = load_der_public_key(base64.b64decode(stripped, validate=True))
    except (ValueError, binascii.Error, UnicodeEncodeError) as error:
        raise InvalidPublicKeyError(f"not a public key in base64 DER or PEM: {error}") from error
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidPublicKeyError("SendGrid's key is an EC key on P-256 (prime256v1)")
    return key


@dataclass(frozen=True)
class SendGridVerifier:
    public_key: ec.EllipticCurvePublicKey
    max_age_seconds: float

    def verify(self, signature: str | None, timestamp: str | None, body: bytes, now: float) -> None:
        """Return if SendGrid signed `body` at `timestamp` recently; else raise."""
        if not signature or not timestamp:
            raise EventAuthenticationError("missing", "signature or timestamp header missing")
        try:
            if not (timestamp.isascii() and timestamp.isdigit()):
                raise ValueError("the timestamp is not Unix seconds")
            signed_at = int(timestamp)
            der = base64.b64decode(signature, validate=True)
        except (ValueError, binascii.Error) as error:
            raise EventAuthenticationError("malformed", "malformed signature headers") from error
        if abs(now - signed_at) > self.max_age_seconds:
            raise EventAuthenticationError(
                "stale", f"timestamp {signed_at} is more than {self.max_age_seconds:g} s away"
            )
        try:
            self.public_key.verify(der, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError) as error:
            raise EventAuthenticationError("signature", "the signature does not verify") from error


@dataclass(frozen=True)
class SharedSecretVerifier:
    secret: str

    def verify(self, presented: str | None) -> None:
        if presented is None or not hmac.compare_digest(
            presented.encode("utf-8"), self.secret.encode("utf-8")
        ):
            raise EventAuthenticationError("secret", "missing or wrong secret")
