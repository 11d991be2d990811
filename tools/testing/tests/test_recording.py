"""The webhook receiver the contract tests use: a request cut off mid-body is not a delivery."""

import base64
import socket
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from mailstack_testing.recording import WebhookReceiver
from mailstack_testing.waiting import eventually

SECRET = "whsec_" + base64.b64encode(b"a receiver's secret, 32 bytes.").decode()


def test_a_request_cut_off_mid_body_is_not_recorded_and_a_whole_one_verifies() -> None:
    body = b'{"type": "email.sent"}'
    with WebhookReceiver() as receiver:
        receiver.secret = SECRET
        address = urlsplit(receiver.url)
        with socket.create_connection((address.hostname, address.port)) as cut_off:
            cut_off.sendall(
                f"POST {address.path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode()
                + body[:10]
            )
        signed = Webhook(SECRET).sign("msg_1", datetime.now(UTC), body.decode())
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
            "webhook-signature": signed,
        }
        answered = httpx.post(receiver.url, content=body, headers=headers, timeout=5)

        assert answered.status_code == 204
        received = eventually(receiver.received, 5)
        assert [(hook.body, hook.verified) for hook in received] == [(body, True)]
