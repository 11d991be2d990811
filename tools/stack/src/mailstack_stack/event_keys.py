"""The local stack's provider event credentials, made once per state directory: the EC P-256 key
pair SendGrid's stub signs its events with (the gateway gets the public half), and the secret
ElasticEmail's stub puts in its notification URL (the gateway gets it too)."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailstack_stack.config import write_atomically

DIRECTORY = "provider-events"
SENDGRID_KEY_FILE = "sendgrid-events-key"
ELASTICEMAIL_SECRET_FILE = "elasticemail-secret"  # noqa: S105 - a file name
SENDGRID_PATH = "/v1/provider-events/sendgrid"
ELASTICEMAIL_PATH = "/v1/provider-events/elasticemail"


@dataclass(frozen=True)
class ProviderEventKeys:
    sendgrid_private_key: str  # base64 DER (PKCS#8): one line, for an environment variable
    sendgrid_public_key: str  # base64 DER (SubjectPublicKeyInfo), as SendGrid shows its key
    elasticemail_secret: str

    def gateway_env(self) -> dict[str, str]:
        return {
            "SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY": self.sendgrid_public_key,
            "ELASTICEMAIL_NOTIFICATION_SECRET": self.elasticemail_secret,
        }

    def stub_env(self, provider: str, gateway_url: str) -> dict[str, str]:
        """The environment of the `provider` stub posting to the gateway at `gateway_url`."""
        if provider == "sendgrid":
            return {
                "STUB_EVENTS_URL": f"{gateway_url}{SENDGRID_PATH}",
                "STUB_EVENTS_PRIVATE_KEY": self.sendgrid_private_key,
            }
        return {"STUB_EVENTS_URL": elasticemail_url(gateway_url, self.elasticemail_secret)}

    def compose_env(self) -> dict[str, str]:
        """What docker-compose.yml interpolates from the environment `docker compose` runs in."""
        return {**self.gateway_env(), "SENDGRID_EVENTS_PRIVATE_KEY": self.sendgrid_private_key}


def elasticemail_url(gateway_url: str, secret: str) -> str:
    return f"{gateway_url}{ELASTICEMAIL_PATH}?secret={secret}"


def ensure_event_keys(state_dir: Path) -> ProviderEventKeys:
    """The keys kept under `state_dir`, made (owner-readable only) the first time."""
    directory = state_dir / DIRECTORY
    key_file, secret_file = directory / SENDGRID_KEY_FILE, directory / ELASTICEMAIL_SECRET_FILE
    if not key_file.is_file():
        der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomically(key_file, f"{base64.b64encode(der).decode()}\n", 0o600)
    if not secret_file.is_file():
        write_atomically(secret_file, f"{secrets.token_urlsafe(32)}\n", 0o600)
    private = key_file.read_text().strip()
    key = serialization.load_der_private_key(base64.b64decode(private), password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ProviderEventKeys(
        sendgrid_private_key=private,
        sendgrid_public_key=base64.b64encode(public).decode(),
        elasticemail_secret=secret_file.read_text().strip(),
    )
