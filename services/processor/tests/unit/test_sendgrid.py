"""The SendGrid v3 adapter: the request it sends, and how it reads the answer."""

from typing import Any

import httpx

from mailstack_processor.providers.base import Mailbox, SendReceipt


def _accepted(_: httpx.Request) -> httpx.Response:
    return httpx.Response(202, headers={"X-Message-Id": "sg-msg-1"})


async def test_sends_the_v3_mail_send_request(make: Any, provider_http: Any) -> None:
    email = make.email(
        cc=(Mailbox("bo@example.com", "Bo"),),
        bcc=(Mailbox("audit@example.com"),),
        reply_to=Mailbox("help@example.com", "Help Desk"),
    )
    provider_http.respond = _accepted

    await provider_http.sender("sendgrid").send(email)

    (request,) = provider_http.requests
    assert request.method == "POST"
    assert request.path == "/v3/mail/send"
    assert request.headers["Authorization"] == "Bearer SG.key-456"
    assert request.headers["content-type"] == "application/json"
    assert "x-elasticemail-apikey" not in request.headers
    body = provider_http.body()
    (personalization,) = body["personalizations"]
    assert personalization["to"] == [{"email": "alex@example.com", "name": "Alex"}]
    assert personalization["cc"] == [{"email": "bo@example.com", "name": "Bo"}]
    assert personalization["bcc"] == [{"email": "audit@example.com"}]
    assert body["from"] == {"email": "orders@example.com", "name": "Shop"}
    assert body["reply_to"] == {"email": "help@example.com", "name": "Help Desk"}
    assert body["subject"] == "Your order"
    assert body["content"] == [
        {"type": "text/plain", "value": "Thanks for your order."},
        {"type": "text/html", "value": "<p>Thanks for your order.</p>"},
    ]


async def test_sends_only_the_fields_an_email_has(make: Any, provider_http: Any) -> None:
    email = make.email(sender=Mailbox("orders@example.com"), text=None)
    provider_http.respond = _accepted

    await provider_http.sender("sendgrid").send(email)

    body = provider_http.body()
    assert body["from"] == {"email": "orders@example.com"}
    assert "reply_to" not in body
    assert "cc" not in body["personalizations"][0]
    assert "bcc" not in body["personalizations"][0]
    assert body["content"] == [{"type": "text/html", "value": "<p>Thanks for your order.</p>"}]


async def test_reads_the_message_id_from_the_header_of_a_202(make: Any, provider_http: Any) -> None:
    provider_http.respond = _accepted

    receipt = await provider_http.sender("sendgrid").send(make.email())

    assert receipt == SendReceipt("sendgrid", message_id="sg-msg-1", http_status=202)
