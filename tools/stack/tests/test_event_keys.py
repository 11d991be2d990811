"""The local stack's provider event credentials: made once, private, and handed to the stubs
and the gateway (host processes and docker compose alike) so the stubs' events verify."""

import base64
import re
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailstack_stack.compose import load_compose
from mailstack_stack.config import StackConfig
from mailstack_stack.event_keys import ensure_event_keys
from mailstack_stack.stack import Stack


def test_the_keys_are_made_once_and_readable_by_the_owner_only(tmp_path: Path) -> None:
    first = ensure_event_keys(tmp_path)
    assert ensure_event_keys(tmp_path) == first
    for path in (tmp_path / "provider-events").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    private = serialization.load_der_private_key(
        base64.b64decode(first.sendgrid_private_key), password=None
    )
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    signature = private.sign(b"1700000000[]", ec.ECDSA(hashes.SHA256()))
    public = serialization.load_der_public_key(base64.b64decode(first.sendgrid_public_key))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, b"1700000000[]", ec.ECDSA(hashes.SHA256()))
    assert len(first.elasticemail_secret) >= 32
    assert ensure_event_keys(tmp_path / "other") != first


def test_host_stubs_post_to_the_gateway_that_holds_the_other_half(
    repo_root: Path, tmp_path: Path
) -> None:
    stack = Stack(StackConfig(repo_root=repo_root, state_dir=tmp_path))
    keys = stack.event_keys()
    gateway = stack.service_env("gateway", _STACK_ENV)

    sendgrid = _environment(stack, "sendgrid-stub")
    elasticemail = _environment(stack, "elasticemail-stub")

    assert gateway["SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY"] == keys.sendgrid_public_key
    assert gateway["ELASTICEMAIL_NOTIFICATION_SECRET"] == keys.elasticemail_secret
    assert sendgrid["STUB_EVENTS_PRIVATE_KEY"] == keys.sendgrid_private_key
    gateway_url = f"http://127.0.0.1:{gateway['GATEWAY_PORT']}"
    assert sendgrid["STUB_EVENTS_URL"] == f"{gateway_url}/v1/provider-events/sendgrid"
    assert elasticemail["STUB_EVENTS_URL"] == (
        f"{gateway_url}/v1/provider-events/elasticemail?secret={keys.elasticemail_secret}"
    )


def test_compose_stubs_post_to_the_gateway_with_what_make_up_passes(
    repo_root: Path, tmp_path: Path
) -> None:
    services: dict[str, Any] = load_compose(StackConfig(repo_root=repo_root, state_dir=tmp_path))[
        "services"
    ]
    passed = set(ensure_event_keys(tmp_path).compose_env())
    referenced = {
        name
        for service in ("gateway", "sendgrid-stub", "elasticemail-stub")
        for value in services[service]["environment"].values()
        for name in re.findall(r"\$\{(\w+):-\}", str(value))
    }
    assert passed <= referenced
    assert {name for name in referenced if "EVENT" in name or "NOTIFICATION" in name} == passed
    sendgrid = services["sendgrid-stub"]["environment"]
    assert sendgrid["STUB_EVENTS_URL"] == "http://gateway:8000/v1/provider-events/sendgrid"
    elasticemail = services["elasticemail-stub"]["environment"]["STUB_EVENTS_URL"]
    assert elasticemail.startswith("http://gateway:8000/v1/provider-events/elasticemail?secret=")


_STACK_ENV = {
    "DATABASE_URL": "postgresql+psycopg://db",
    "EMAIL_QUEUE_URL": "http://q/emails",
    "EMAIL_DLQ_URL": "http://q/emails-dlq",
    "ATTACHMENTS_BUCKET": "attachments",
    "AWS_ENDPOINT_URL": "http://aws",
    "DEV_ISSUER_URL": "http://issuer",
}


def _environment(stack: Stack, name: str) -> dict[str, str]:
    """The environment supervisord would start component `name` with."""
    program = stack._program(name)
    pairs = re.findall(r'(\w+)="([^"]*)"', str(program["environment"]))
    return dict(pairs)
