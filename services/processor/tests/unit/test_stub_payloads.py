"""Both adapters' requests, with every optional field, are what the provider stubs accept.

The stubs validate like the real APIs (tools/stubs); here they run in-process under uvicorn on
a loopback port, so what they record is exactly what the adapter put on the wire."""

import asyncio
import base64
import json
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from mailstack_processor.providers.base import Attachment, Mailbox, OutgoingEmail, SendReceipt
from mailstack_processor.providers.elasticemail import ElasticEmailSender
from mailstack_processor.providers.http import HttpSender, provider_session
from mailstack_processor.providers.sendgrid import SendGridSender
from mailstack_stubs.app import create_app
from mailstack_stubs.behaviour import StubState

KEY = "stub-key"
PDF = b"%PDF-1.4\n" + bytes(range(256))
PNG = b"\x89PNG\r\n\x1a\n\x00\x01"
SENDERS: dict[str, type[HttpSender]] = {
    "elasticemail": ElasticEmailSender,
    "sendgrid": SendGridSender,
}


class StubbedProvider:
    def __init__(self, sender: HttpSender, state: StubState) -> None:
        self.sender = sender
        self.state = state

    def recorded(self) -> list[dict[str, Any]]:
        return [send.to_json() for send in self.state.sends()]


@pytest.fixture(params=list(SENDERS))
async def stubbed(request: pytest.FixtureRequest) -> AsyncIterator[StubbedProvider]:
    state = StubState()
    server = uvicorn.Server(
        uvicorn.Config(create_app(request.param, KEY, state), log_level="warning")
    )
    listening = socket.create_server(("127.0.0.1", 0))  # connections queue until it serves
    port = listening.getsockname()[1]
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        async with provider_session(max_connections=2) as session:
            stub = SENDERS[request.param](session, f"http://127.0.0.1:{port}", KEY, 3.0)
            yield StubbedProvider(stub, state)
    finally:
        server.should_exit = True
        await serving


def _email(**overrides: Any) -> OutgoingEmail:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "sender": Mailbox("orders@example.com", "Shop"),
        "to": (Mailbox("alex@example.com", "Alex"),),
        "cc": (Mailbox("bo@example.com"),),
        "subject": "Your invoice",
        "text": "Attached.",
        "html": '<p>Attached.</p><img src="cid:logo">',
        "headers": {"X-Entity-Ref-ID": "order-1234", "List-Unsubscribe": "<mailto:u@x.io>"},
        "tags": ("welcome", "beta"),
        "metadata": {"user_id": "42", "plan": "pro"},
        "attachments": (
            Attachment("invoice.pdf", PDF, "application/pdf"),
            Attachment("logo.png", PNG, "image/png", "inline", "logo"),
        ),
    }
    return OutgoingEmail(**(fields | overrides))


async def test_the_stub_accepts_every_field_and_records_it(stubbed: StubbedProvider) -> None:
    email = _email()

    receipt = await stubbed.sender.send(email)

    assert isinstance(receipt, SendReceipt)
    assert receipt.message_id
    (recorded,) = stubbed.recorded()
    assert recorded["status"] in (200, 202)
    body = recorded["body"]
    if stubbed.sender.name == "elasticemail":
        content = body["Content"]
        attachments = [
            (a["Name"], a["ContentType"], base64.b64decode(a["BinaryContent"]))
            for a in content["Attachments"]
        ]
        headers = content["Headers"]
        assert body["Options"]["ChannelName"] == "welcome"
        carried = json.loads(content["Postback"])
        assert carried["metadata"] == {"user_id": "42", "plan": "pro"}
        assert carried["tags"] == ["welcome", "beta"]
    else:
        attachments = [
            (a["filename"], a["type"], base64.b64decode(a["content"])) for a in body["attachments"]
        ]
        headers = body["headers"]
        assert body["categories"] == ["welcome", "beta"]
        assert body["personalizations"][0]["custom_args"] == {
            "user_id": "42",
            "plan": "pro",
            "mailstack_email_id": str(email.id),
        }
        assert body["attachments"][1]["content_id"] == "logo"
    assert attachments == [
        ("invoice.pdf", "application/pdf", PDF),
        ("logo.png", "image/png", PNG),
    ]
    assert headers["X-Entity-Ref-ID"] == "order-1234"
    assert headers["List-Unsubscribe"] == "<mailto:u@x.io>"


async def test_the_stub_accepts_the_most_tags_and_metadata_the_gateway_allows(
    stubbed: StubbedProvider,
) -> None:
    tags = tuple(f"{index:02d}-" + "t" * 61 for index in range(10))
    metadata = {f"k{index}": "v" * 500 for index in range(4)} | {"k4": "v" * 7}

    await stubbed.sender.send(_email(tags=tags, metadata=metadata, attachments=()))

    (recorded,) = stubbed.recorded()
    assert recorded["status"] in (200, 202)
