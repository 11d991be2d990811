"""The ElasticEmail v4 adapter: the exact request it sends, and how it reads the answer."""

from typing import Any

import httpx

from mailstack_processor.providers.base import Mailbox, SendReceipt


async def test_sends_the_v4_transactional_request(make: Any, provider_http: Any) -> None:
    email = make.email(
        cc=(Mailbox("bo@example.com", "Bo"), Mailbox("cy@example.com")),
        bcc=(Mailbox("audit@example.com"),),
        reply_to=Mailbox("help@example.com", "Help Desk"),
    )
    provider_http.respond = lambda _: httpx.Response(
        200, json={"TransactionID": "tx-1", "MessageID": "msg-1"}
    )

    await provider_http.sender("elasticemail").send(email)

    (request,) = provider_http.requests
    assert request.method == "POST"
    assert request.path == "/v4/emails/transactional"
    assert request.headers["X-ElasticEmail-ApiKey"] == "ee-key-123"
    assert request.headers["Idempotency-Key"] == str(email.id)
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert provider_http.body() == {
        "Recipients": {
            "To": ["alex@example.com"],
            "CC": ["bo@example.com", "cy@example.com"],
            "BCC": ["audit@example.com"],
        },
        "Content": {
            "From": "Shop <orders@example.com>",
            "Subject": "Your order",
            "ReplyTo": "Help Desk <help@example.com>",
            "Body": [
                {
                    "ContentType": "HTML",
                    "Content": "<p>Thanks for your order.</p>",
                    "Charset": "utf-8",
                },
                {
                    "ContentType": "PlainText",
                    "Content": "Thanks for your order.",
                    "Charset": "utf-8",
                },
            ],
            "Headers": {"X-Mailstack-Email-Id": str(email.id)},
            # Always: ElasticEmail's notifications carry it back, with the email's id.
            "Postback": f'{{"mailstack_email_id":"{email.id}","tags":[],"metadata":{{}}}}',
        },
    }


async def test_sends_only_the_fields_an_email_has(make: Any, provider_http: Any) -> None:
    email = make.email(sender=Mailbox("orders@example.com"), html=None)
    provider_http.respond = lambda _: httpx.Response(
        200, json={"TransactionID": "tx-1", "MessageID": "msg-1"}
    )

    await provider_http.sender("elasticemail").send(email)

    body = provider_http.body()
    assert body["Recipients"] == {"To": ["alex@example.com"]}
    assert body["Content"]["From"] == "orders@example.com"
    assert "ReplyTo" not in body["Content"]
    assert body["Content"]["Body"] == [
        {"ContentType": "PlainText", "Content": "Thanks for your order.", "Charset": "utf-8"}
    ]


async def test_sends_the_same_idempotency_key_on_every_attempt(
    make: Any, provider_http: Any
) -> None:
    email = make.email()
    provider_http.respond = lambda _: httpx.Response(
        200, json={"TransactionID": "tx-1", "MessageID": "msg-1"}
    )
    sender = provider_http.sender("elasticemail")

    await sender.send(email)
    await sender.send(email)

    keys = [request.headers["Idempotency-Key"] for request in provider_http.requests]
    assert keys == [str(email.id), str(email.id)]


async def test_reads_message_and_transaction_ids_from_a_200(make: Any, provider_http: Any) -> None:
    provider_http.respond = lambda _: httpx.Response(
        200, json={"TransactionID": "tx-42", "MessageID": "msg-42"}
    )

    receipt = await provider_http.sender("elasticemail").send(make.email())

    assert receipt == SendReceipt(
        "elasticemail", message_id="msg-42", transaction_id="tx-42", http_status=200
    )


async def test_treats_an_unreadable_200_as_sent_never_as_a_failure(
    make: Any, provider_http: Any
) -> None:
    provider_http.respond = lambda _: httpx.Response(200, text="OK")

    receipt = await provider_http.sender("elasticemail").send(make.email())

    assert receipt.provider == "elasticemail"
    assert receipt.message_id == "OK"
