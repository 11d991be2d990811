"""Attachments, headers, tags, metadata and test mode: how delivery and both adapters treat them."""

import asyncio
import base64
import hashlib
import json
from typing import Any

import httpx
import pytest

from mailstack_core.status import EmailStatus
from mailstack_processor.delivery import Action, AttachmentRef, RetryPolicy, deliver
from mailstack_processor.providers.base import (
    Attachment,
    Mailbox,
    ProviderUnavailableError,
    SendReceipt,
)

EE, SG = "elasticemail", "sendgrid"
LEASE = 30
PDF = b"%PDF-1.4 invoice"
PNG = b"\x89PNG logo"


def _ref(key: str, content: bytes, **overrides: Any) -> AttachmentRef:
    fields: dict[str, Any] = {
        "key": key,
        "filename": key.rsplit("/", 1)[-1] + ".bin",
        "content_type": "application/octet-stream",
        "disposition": "attachment",
        "content_id": None,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    return AttachmentRef(**(fields | overrides))


def _receipt(provider: str) -> SendReceipt:
    return SendReceipt(provider, message_id=f"{provider}-msg", http_status=200)


async def _deliver(
    email: Any, store: Any, senders: list[Any], policy: RetryPolicy, **kw: Any
) -> Any:
    return await deliver(email.id, kw.pop("receive_count", 1), store, senders, policy, LEASE, **kw)


# -- delivery -------------------------------------------------------------------------------


async def test_reads_the_attachments_and_hands_them_to_the_provider(
    make: Any, store: Any, policy: RetryPolicy, attachment_source: Any
) -> None:
    email = make.email()
    attachment_source.objects = {f"{email.id}/0": PDF, f"{email.id}/1": PNG}
    refs = [
        _ref(f"{email.id}/0", PDF, filename="invoice.pdf", content_type="application/pdf"),
        _ref(f"{email.id}/1", PNG, disposition="inline", content_id="logo"),
    ]
    store.add(email, attachments=refs)
    primary = make.sender(EE, _receipt(EE))

    disposition = await _deliver(email, store, [primary], policy, attachments=attachment_source)

    assert (disposition.action, disposition.status) == (Action.DELETE, EmailStatus.SENT)
    (sent,) = primary.calls
    assert sent.attachments == (
        Attachment("invoice.pdf", PDF, "application/pdf"),
        Attachment("1.bin", PNG, "application/octet-stream", "inline", "logo"),
    )


@pytest.mark.parametrize("stored", [None, b"%PDF-1.4 tampered"])
async def test_fails_the_email_when_an_attachment_is_gone_or_not_what_was_stored(
    make: Any, store: Any, policy: RetryPolicy, attachment_source: Any, stored: bytes | None
) -> None:
    email = make.email()
    if stored is not None:
        attachment_source.objects[f"{email.id}/0"] = stored
    store.add(email, attachments=[_ref(f"{email.id}/0", PDF)])
    primary = make.sender(EE, _receipt(EE))

    disposition = await _deliver(email, store, [primary], policy, attachments=attachment_source)

    assert (disposition.action, disposition.status) == (Action.DELETE, EmailStatus.FAILED)
    assert primary.calls == []
    assert store.after_claim(email.id) == [(EmailStatus.FAILED, None)]
    assert store.history[email.id][-1].detail["outcome"] == "attachment_missing"


async def test_retries_later_when_the_attachment_store_does_not_answer(
    make: Any, store: Any, policy: RetryPolicy, attachment_source: Any
) -> None:
    email = make.email()
    attachment_source.unavailable = True
    store.add(email, attachments=[_ref(f"{email.id}/0", PDF)])
    primary = make.sender(EE, _receipt(EE))

    disposition = await _deliver(email, store, [primary], policy, attachments=attachment_source)

    assert (disposition.action, disposition.status) == (Action.RETRY, EmailStatus.QUEUED)
    assert disposition.delay_seconds == policy.backoff(1)
    assert primary.calls == []
    detail = store.history[email.id][-1].detail
    assert detail["outcome"] == "retry_scheduled"
    assert detail["last_error"].startswith("attachments: ")


async def test_gives_up_when_the_attachment_store_is_still_down_at_the_last_attempt(
    make: Any, store: Any, policy: RetryPolicy, attachment_source: Any
) -> None:
    email = make.email()
    attachment_source.unavailable = True
    store.add(email, attachments=[_ref(f"{email.id}/0", PDF)])

    disposition = await _deliver(
        email,
        store,
        [make.sender(EE, _receipt(EE))],
        policy,
        attachments=attachment_source,
        receive_count=policy.max_attempts,
    )

    assert (disposition.action, disposition.status) == (Action.DEAD_LETTER, EmailStatus.FAILED)
    assert store.history[email.id][-1].detail["outcome"] == "out_of_attempts"


async def test_a_test_mode_email_is_sent_by_the_sink_without_any_provider(
    make: Any, store: Any, policy: RetryPolicy
) -> None:
    email = make.email(
        to=(Mailbox("a@sink.mailstack.test"),),
        cc=(Mailbox("b@sink.mailstack.test"),),
        bcc=(Mailbox("c@sink.mailstack.test"),),
    )
    store.add(email)
    primary = make.sender(EE, _receipt(EE))
    secondary = make.sender(SG, _receipt(SG))

    disposition = await _deliver(email, store, [primary, secondary], policy)

    assert (disposition.action, disposition.status) == (Action.DELETE, EmailStatus.SENT)
    assert primary.calls == secondary.calls == []
    assert store.after_claim(email.id) == [(EmailStatus.SENT, "sink")]
    receipt = store.receipts[email.id]
    assert (receipt.provider, receipt.test_mode) == ("sink", True)
    assert receipt.message_id == f"sink-{email.id}"


async def test_a_test_mode_email_still_reads_its_attachments(
    make: Any, store: Any, policy: RetryPolicy, attachment_source: Any
) -> None:
    email = make.email(to=(Mailbox("a@sink.mailstack.test"),))
    attachment_source.objects[f"{email.id}/0"] = PDF
    store.add(email, attachments=[_ref(f"{email.id}/0", PDF)])

    disposition = await _deliver(
        email, store, [make.sender(EE, _receipt(EE))], policy, attachments=attachment_source
    )

    assert disposition.status is EmailStatus.SENT
    assert attachment_source.fetched == [f"{email.id}/0"]
    assert store.after_claim(email.id) == [(EmailStatus.SENT, "sink")]


def test_an_email_with_one_real_recipient_is_not_in_test_mode(make: Any) -> None:
    email = make.email(to=(Mailbox("a@sink.mailstack.test"),), bcc=(Mailbox("audit@example.com"),))
    assert not email.is_test_mode
    assert make.email(to=(Mailbox("a@SINK.mailstack.test"),)).is_test_mode


# -- the providers' wire formats ------------------------------------------------------------


def _rich(make: Any) -> Any:
    return make.email(
        headers={"X-Entity-Ref-ID": "order-1234"},
        tags=("welcome", "beta"),
        metadata={"user_id": "42"},
        attachments=(
            Attachment("invoice.pdf", PDF, "application/pdf"),
            Attachment("logo.png", PNG, "image/png", "inline", "logo"),
        ),
    )


async def test_sendgrid_gets_headers_categories_custom_args_and_attachments(
    make: Any, provider_http: Any
) -> None:
    provider_http.respond = lambda _: httpx.Response(202, headers={"X-Message-Id": "sg-1"})
    email = _rich(make)

    await provider_http.sender(SG).send(email)

    body = provider_http.body()
    assert body["headers"] == {"X-Entity-Ref-ID": "order-1234"}
    assert body["categories"] == ["welcome", "beta"]
    assert body["personalizations"][0]["custom_args"] == {
        "user_id": "42",
        "mailstack_email_id": str(email.id),
    }
    assert body["attachments"] == [
        {
            "content": base64.b64encode(PDF).decode(),
            "type": "application/pdf",
            "filename": "invoice.pdf",
            "disposition": "attachment",
        },
        {
            "content": base64.b64encode(PNG).decode(),
            "type": "image/png",
            "filename": "logo.png",
            "disposition": "inline",
            "content_id": "logo",
        },
    ]


async def test_elasticemail_gets_headers_attachments_a_channel_and_a_postback(
    make: Any, provider_http: Any
) -> None:
    provider_http.respond = lambda _: httpx.Response(
        200, json={"TransactionID": "t", "MessageID": "m"}
    )
    email = _rich(make)

    await provider_http.sender(EE).send(email)

    body = provider_http.body()
    content = body["Content"]
    assert content["Headers"] == {
        "X-Entity-Ref-ID": "order-1234",
        "X-Mailstack-Email-Id": str(email.id),
    }
    assert content["Attachments"] == [
        {
            "BinaryContent": base64.b64encode(PDF).decode(),
            "Name": "invoice.pdf",
            "ContentType": "application/pdf",
        },
        {
            "BinaryContent": base64.b64encode(PNG).decode(),
            "Name": "logo.png",
            "ContentType": "image/png",
        },
    ]
    assert json.loads(content["Postback"]) == {
        "mailstack_email_id": str(email.id),
        "tags": ["welcome", "beta"],
        "metadata": {"user_id": "42"},
    }
    assert body["Options"] == {"ChannelName": "welcome"}


@pytest.mark.parametrize("provider", [EE, SG])
async def test_a_plain_email_carries_none_of_the_optional_fields(
    make: Any, provider_http: Any, provider: str
) -> None:
    provider_http.respond = lambda _: httpx.Response(
        200 if provider == EE else 202, json={"TransactionID": "t", "MessageID": "m"}
    )

    await provider_http.sender(provider).send(make.email())

    body = provider_http.body()
    if provider == EE:
        assert set(body) == {"Recipients", "Content"}
        assert "Attachments" not in body["Content"]
        # The Postback is always there: it carries the email's id into ElasticEmail's events.
        assert json.loads(body["Content"]["Postback"])["tags"] == []
    else:
        assert {"headers", "categories", "attachments"}.isdisjoint(body)


@pytest.mark.parametrize("provider", [EE, SG])
async def test_a_big_upload_gets_more_time_than_the_provider_timeout(
    make: Any, provider_http: Any, provider: str
) -> None:
    async def slow(_: Any) -> httpx.Response:
        await asyncio.sleep(0.4)
        return httpx.Response(200 if provider == EE else 202, json={"MessageID": "m"})

    provider_http.respond = slow
    sender = provider_http.sender(provider, timeout_seconds=0.2)
    # 4 MiB of attachments: one more second.
    big = make.email(attachments=(Attachment("a.bin", b"\x00" * 4 * 1024 * 1024, "x/y"),))

    await sender.send(big)
    with pytest.raises(ProviderUnavailableError) as caught:
        await sender.send(make.email())
    assert caught.value.outcome_unknown
