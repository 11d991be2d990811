"""Both stubs post events like the real services: after each send, and on demand; SendGrid's
signed as SendGrid signs, ElasticEmail's as its notification URL with the shared secret."""

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI, Request, Response

from mailstack_stubs.control import StubControl
from mailstack_stubs.events import load_private_key
from mailstack_testing.waiting import eventually

KEY = ec.generate_private_key(ec.SECP256R1())
PRIVATE_DER = base64.b64encode(
    KEY.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
).decode()
SECRET = "shared-secret-1"
SENDGRID_HEADERS = {"Authorization": "Bearer test-key-123"}
SENDER = {"email": "orders@example.com"}


def sendgrid_body(**fields: Any) -> dict[str, Any]:
    return {
        "personalizations": [{"to": [{"email": "alex@example.com"}]}],
        "from": SENDER,
        "subject": "Your order",
        "content": [{"type": "text/plain", "value": "Thanks"}],
    } | fields


def elasticemail_body(**content: Any) -> dict[str, Any]:
    return {
        "Recipients": {"To": ["alex@example.com"]},
        "Content": {"From": "orders@example.com", "Subject": "Your order"} | content,
    }


ELASTICEMAIL_HEADERS = {"X-ElasticEmail-ApiKey": "test-key-123"}


@dataclass
class Receiver:
    """A provider event endpoint: records every request, answers `status`."""

    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/events/{provider}", methods=["GET", "POST"])
        async def receive(provider: str, request: Request) -> Response:
            self.requests.append(
                {
                    "provider": provider,
                    "method": request.method,
                    "query": dict(request.query_params),
                    "headers": dict(request.headers),
                    "body": await request.body(),
                }
            )
            return Response(status_code=self.status, content=b'{"ok": true}')

        return app

    def of(self, provider: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["provider"] == provider]


def _serve(app: FastAPI) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    eventually(lambda: server.started, 10, interval=0.01, what="receiver started")
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiving = Receiver()
    server, thread, receiving.base_url = _serve(receiving.app())
    yield receiving
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def stubs(receiver: Receiver, start_stub: Callable[..., Any]) -> Iterator[dict[str, Any]]:
    start_server = start_stub
    started = {
        "sendgrid": start_server(
            "sendgrid",
            events_url=f"{receiver.base_url}/events/sendgrid",
            events_private_key=PRIVATE_DER,
        ),
        "elasticemail": start_server(
            "elasticemail", events_url=f"{receiver.base_url}/events/elasticemail?secret={SECRET}"
        ),
        # Nothing listens where it posts: every post fails.
        "unreachable": start_server("sendgrid", events_url="http://127.0.0.1:9/events"),
    }
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(autouse=True)
def _fresh(receiver: Receiver, stubs: dict[str, Any]) -> None:
    receiver.requests.clear()
    receiver.status = 200
    for server in stubs.values():
        StubControl(server.base_url).reset()


def _verify(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of a SendGrid post, once its signature verifies with the stub's public key."""
    timestamp = request["headers"]["x-twilio-email-event-webhook-timestamp"]
    signature = base64.b64decode(request["headers"]["x-twilio-email-event-webhook-signature"])
    KEY.public_key().verify(
        signature, timestamp.encode() + request["body"], ec.ECDSA(hashes.SHA256())
    )
    assert abs(int(timestamp) - time.time()) < 60
    events: list[dict[str, Any]] = json.loads(request["body"])
    return events


def test_sendgrid_posts_a_signed_event_per_recipient_after_a_send(
    receiver: Receiver, stubs: dict[str, Any]
) -> None:
    body = sendgrid_body(
        personalizations=[
            {
                "to": [{"email": "alex@example.com"}, {"email": "bounce@example.org"}],
                "cc": [{"email": "complaint@example.org"}],
                "custom_args": {"mailstack_email_id": "e-1"},
            }
        ]
    )
    sent = httpx.post(
        f"{stubs['sendgrid'].base_url}/v3/mail/send", json=body, headers=SENDGRID_HEADERS
    )
    assert sent.status_code == 202
    message_id = sent.headers["x-message-id"]

    posts = eventually(lambda: receiver.of("sendgrid"), 10, until=lambda p: len(p) == 3)

    events = {event["email"]: event for post in posts for event in _verify(post)}
    assert {email: event["event"] for email, event in events.items()} == {
        "alex@example.com": "delivered",
        "bounce@example.org": "bounce",
        "complaint@example.org": "spamreport",
    }
    bounce = events["bounce@example.org"]
    assert bounce["type"] == "bounce"
    assert bounce["sg_message_id"].startswith(f"{message_id}.filter")
    assert bounce["mailstack_email_id"] == "e-1"
    assert len({event["sg_event_id"] for event in events.values()}) == 3


def test_a_tampered_sendgrid_post_does_not_verify(
    receiver: Receiver, stubs: dict[str, Any]
) -> None:
    sent = httpx.post(
        f"{stubs['sendgrid'].base_url}/v3/mail/send", json=sendgrid_body(), headers=SENDGRID_HEADERS
    )
    assert sent.status_code == 202
    (post,) = eventually(lambda: receiver.of("sendgrid"), 10)
    post["body"] = post["body"].replace(b"delivered", b"bounce")
    with pytest.raises(InvalidSignature):
        _verify(post)


def test_asking_twice_reposts_the_same_event_and_lists_the_answers(
    receiver: Receiver, stubs: dict[str, Any]
) -> None:
    base = stubs["sendgrid"].base_url
    sent = httpx.post(f"{base}/v3/mail/send", json=sendgrid_body(), headers=SENDGRID_HEADERS)
    message_id = sent.headers["x-message-id"]
    eventually(lambda: receiver.of("sendgrid"), 10)  # the automatic `delivered`
    receiver.status = 500
    asked = {"message_id": message_id, "event": "open"}

    first = httpx.post(f"{base}/_stub/events", json=asked)
    second = httpx.post(f"{base}/_stub/events", json=asked)

    assert first.status_code == second.status_code == 202
    assert first.json()["event_id"] == second.json()["event_id"]
    posted = eventually(
        lambda: httpx.get(f"{base}/_stub/events").json(), 10, until=lambda p: len(p) == 3
    )
    opens = [p for p in posted if p["event"] == "open"]
    assert [p["status"] for p in opens] == [500, 500]
    assert len({json.loads(p["body"])[0]["sg_event_id"] for p in opens}) == 1
    assert opens[0]["answer"] == '{"ok": true}'


def test_control_api_refuses_an_unknown_message_or_event(stubs: dict[str, Any]) -> None:
    base = stubs["sendgrid"].base_url
    unknown = httpx.post(f"{base}/_stub/events", json={"message_id": "nope", "event": "open"})
    assert unknown.status_code == 404
    invalid = httpx.post(f"{base}/_stub/events", json={"message_id": "x", "event": "exploded"})
    assert invalid.status_code == 422


def test_elasticemail_calls_its_notification_url_with_the_secret_and_the_event(
    receiver: Receiver, stubs: dict[str, Any]
) -> None:
    body = elasticemail_body(Postback='{"mailstack_email_id":"e-2"}')
    body["Recipients"] = {"To": ["Deferred@example.org", "Zed <zed@example.com>"]}
    base = stubs["elasticemail"].base_url
    sent = httpx.post(f"{base}/v4/emails/transactional", json=body, headers=ELASTICEMAIL_HEADERS)
    message_id = sent.json()["MessageID"]

    posts = eventually(lambda: receiver.of("elasticemail"), 10, until=lambda p: len(p) == 2)

    by_recipient = {post["query"]["to"]: post for post in posts}
    deferred, delivered = by_recipient["Deferred@example.org"], by_recipient["zed@example.com"]
    assert deferred["method"] == "GET"
    assert deferred["query"]["secret"] == SECRET
    assert (deferred["query"]["status"], deferred["query"]["category"]) == ("Error", "GreyListed")
    assert delivered["query"]["status"] == "Sent"
    assert delivered["query"]["messageid"] == message_id
    assert delivered["query"]["postback"] == '{"mailstack_email_id":"e-2"}'
    # The stub lists a post once it has read the answer, after the receiver recorded it.
    listed = eventually(
        lambda: httpx.get(f"{base}/_stub/events").json(), 10, until=lambda p: len(p) == 2
    )
    assert all(parse_qs(urlsplit(p["url"]).query)["secret"] == ["***"] for p in listed)


def test_a_failing_events_url_is_recorded_and_the_send_does_not_wait(
    stubs: dict[str, Any],
) -> None:
    base = stubs["unreachable"].base_url
    sent = httpx.post(f"{base}/v3/mail/send", json=sendgrid_body(), headers=SENDGRID_HEADERS)
    assert sent.status_code == 202
    (posted,) = eventually(lambda: httpx.get(f"{base}/_stub/events").json(), 10)
    assert posted["status"] is None
    assert posted["error"].startswith("ConnectError")


def test_the_signing_key_is_taken_as_pem_too() -> None:
    pem = KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    assert load_private_key(pem).public_key() == KEY.public_key()
    with pytest.raises(ValueError, match="P-256"):
        load_private_key(
            base64.b64encode(
                ec.generate_private_key(ec.SECP384R1()).private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            ).decode()
        )
