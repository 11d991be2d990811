"""delivery.deliver and the suppression list: checked once, before any provider is called."""

from typing import Any

from mailstack_core.outcomes import Outcome
from mailstack_core.status import EmailStatus
from mailstack_processor.delivery import Action, RetryPolicy, deliver
from mailstack_processor.providers.base import Mailbox, SendReceipt

EE = "elasticemail"
LEASE = 30


def _receipt() -> SendReceipt:
    return SendReceipt(EE, message_id="ee-msg", http_status=200)


async def test_an_email_whose_recipients_are_all_suppressed_fails_without_a_provider_call(
    make: Any, store: Any, policy: RetryPolicy
) -> None:
    email = make.email(to=(Mailbox("Bounce@Example.org"),), cc=(Mailbox("complaint@example.org"),))
    store.add(email)
    store.suppressed = {"bounce@example.org", "complaint@example.org"}
    sender = make.sender(EE, _receipt())

    disposition = await deliver(email.id, 1, store, [sender], policy, LEASE)

    assert disposition.action is Action.DELETE
    assert disposition.status is EmailStatus.FAILED
    assert sender.calls == []
    assert store.status(email.id) is EmailStatus.FAILED
    final = store.history[email.id][-1]
    assert final.detail["outcome"] == Outcome.SUPPRESSED
    assert final.detail["suppressed"] == ["bounce@example.org", "complaint@example.org"]


async def test_a_partly_suppressed_email_goes_to_the_others_and_says_who_was_dropped(
    make: Any, store: Any, policy: RetryPolicy
) -> None:
    email = make.email(
        to=(Mailbox("alex@example.com"), Mailbox("bounce@example.org")),
        bcc=(Mailbox("audit@example.com"), Mailbox("gone@example.org")),
    )
    store.add(email)
    store.suppressed = {"bounce@example.org", "gone@example.org"}
    sender = make.sender(EE, _receipt())

    disposition = await deliver(email.id, 1, store, [sender], policy, LEASE)

    assert disposition.status is EmailStatus.SENT
    (sent,) = sender.calls
    assert [m.email for m in sent.to] == ["alex@example.com"]
    assert [m.email for m in sent.bcc] == ["audit@example.com"]
    assert store.history[email.id][-1].detail["suppressed"] == [
        "bounce@example.org",
        "gone@example.org",
    ]


async def test_copies_alone_are_not_sent_when_every_to_recipient_is_suppressed(
    make: Any, store: Any, policy: RetryPolicy
) -> None:
    email = make.email(to=(Mailbox("bounce@example.org"),), cc=(Mailbox("bo@example.com"),))
    store.add(email)
    store.suppressed = {"bounce@example.org"}
    sender = make.sender(EE, _receipt())

    disposition = await deliver(email.id, 1, store, [sender], policy, LEASE)

    assert disposition.status is EmailStatus.FAILED
    assert sender.calls == []
    assert store.history[email.id][-1].detail["suppressed"] == ["bounce@example.org"]


async def test_nothing_suppressed_sends_the_email_as_it_is(
    make: Any, store: Any, policy: RetryPolicy
) -> None:
    email = make.email()
    store.add(email)
    store.suppressed = {"someone-else@example.org"}
    sender = make.sender(EE, _receipt())

    await deliver(email.id, 1, store, [sender], policy, LEASE)

    assert sender.calls == [email]
    assert "suppressed" not in store.history[email.id][-1].detail
