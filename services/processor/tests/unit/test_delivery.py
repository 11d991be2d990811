"""delivery.deliver: the decision table (claim, providers in order, history, queue action)."""

from typing import Any

import pytest

from mailstack_core.status import EmailStatus
from mailstack_processor.delivery import Action, RetryPolicy, deliver
from mailstack_processor.providers.base import (
    ProviderMisconfiguredError,
    ProviderRejectedError,
    ProviderUnavailableError,
    SendReceipt,
)

EE, SG = "elasticemail", "sendgrid"
LEASE = 30
FAILED, SENT, QUEUED = EmailStatus.FAILED, EmailStatus.SENT, EmailStatus.QUEUED


def _receipt(provider: str) -> SendReceipt:
    return SendReceipt(provider, message_id=f"{provider}-msg", http_status=200)


def _server_error(provider: str, status: int = 503, **kwargs: Any) -> ProviderUnavailableError:
    return ProviderUnavailableError(provider, f"HTTP {status}", status, **kwargs)


def _timeout(provider: str) -> ProviderUnavailableError:
    return ProviderUnavailableError(provider, "no answer within 3 s", outcome_unknown=True)


async def _deliver(
    email_id: Any, receive_count: int, store: Any, senders: list[Any], policy: RetryPolicy
) -> Any:
    return await deliver(email_id, receive_count, store, senders, policy, LEASE)


async def test_sends_with_the_primary_and_never_calls_the_secondary(
    make: Any, store: Any, policy: RetryPolicy
) -> None:
    email = make.email()
    store.add(email)
    primary, secondary = make.sender(EE, _receipt(EE)), make.sender(SG, _receipt(SG))

    disposition = await _deliver(email.id, 1, store, [primary, secondary], policy)

    assert (disposition.action, disposition.status) == (Action.DELETE, SENT)
    assert primary.calls == [email]
    assert secondary.calls == []
    assert store.status(email.id) is SENT
    assert store.receipts[email.id].provider == EE
    assert store.after_claim(email.id) == [(SENT, EE)]
    assert store.claims == [(email.id, LEASE, 1)]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
async def test_falls_back_to_sendgrid_when_elasticemail_answers_a_transient_error(
    make: Any, store: Any, policy: RetryPolicy, status: int
) -> None:
    email = make.email()
    store.add(email)
    primary = make.sender(EE, _server_error(EE, status))
    secondary = make.sender(SG, _receipt(SG))

    disposition = await _deliver(email.id, 1, store, [primary, secondary], policy)

    assert (disposition.action, disposition.status) == (Action.DELETE, SENT)
    assert secondary.calls == [email]
    assert store.after_claim(email.id) == [(FAILED, EE), (SENT, SG)]
    failed_detail = store.history[email.id][2].detail
    assert failed_detail["outcome"] == "failed"
    assert failed_detail["class"] == "transient"
    assert failed_detail["http_status"] == status
    assert failed_detail["attempt"] == 1
    assert store.receipts[email.id].provider == SG


async def test_falls_back_to_sendgrid_when_elasticemail_times_out_and_records_unknown_outcome(
    make: Any, store: Any, policy: RetryPolicy
) -> None:
    email = make.email()
    store.add(email)
    primary, secondary = make.sender(EE, _timeout(EE)), make.sender(SG, _receipt(SG))

    disposition = await _deliver(email.id, 1, store, [primary, secondary], policy)

    assert disposition.status is SENT
    assert store.after_claim(email.id) == [(FAILED, EE), (SENT, SG)]
    assert store.history[email.id][2].detail["outcome"] == "unknown"
    assert store.history[email.id][2].detail["http_status"] is None


@pytest.mark.parametrize("status", [401, 403])
async def test_falls_over_when_the_primary_refuses_our_credentials(
    make: Any, store: Any, policy: RetryPolicy, status: int
) -> None:
    email = make.email()
    store.add(email)
    primary = make.sender(EE, ProviderMisconfiguredError(EE, "bad key", status))
    secondary = make.sender(SG, _receipt(SG))

    disposition = await _deliver(email.id, 1, store, [primary, secondary], policy)

    assert disposition.status is SENT
    assert secondary.calls == [email]
    assert store.after_claim(email.id) == [(FAILED, EE), (SENT, SG)]
    assert store.history[email.id][2].detail["class"] == "configuration"


@pytest.mark.parametrize("status", [400, 413])
async def test_fails_at_once_without_the_secondary_when_the_primary_rejects_the_message(
    make: Any, store: Any, policy: RetryPolicy, status: int
) -> None:
    email = make.email()
    store.add(email)
    primary = make.sender(EE, ProviderRejectedError(EE, "Invalid recipient", status))
    secondary = make.sender(SG, _receipt(SG))

    disposition = await _deliver(email.id, 1, store, [primary, secondary], policy)

    assert (disposition.action, disposition.status) == (Action.DELETE, FAILED)
    assert secondary.calls == []
    assert store.status(email.id) is FAILED
    assert store.after_claim(email.id) == [(FAILED, EE)]
    detail = store.history[email.id][-1].detail
    assert detail["outcome"] == "rejected"
    assert detail["error"] == "Invalid recipient"
    assert detail["http_status"] == status


async def test_fails_with_the_secondary_reason_when_it_rejects_after_a_primary_outage(
    make: Any, store: Any, policy: RetryPolicy
) -> None:
    email = make.email()
    store.add(email)
    primary = make.sender(EE, _server_error(EE))
    secondary = make.sender(SG, ProviderRejectedError(SG, "from.email: not verified", 400))

    disposition = await _deliver(email.id, 1, store, [primary, secondary], policy)

    assert (disposition.action, disposition.status) == (Action.DELETE, FAILED)
    assert store.after_claim(email.id) == [(FAILED, EE), (FAILED, SG)]
    assert store.history[email.id][-1].detail["error"] == "from.email: not verified"


async def test_retries_with_backoff_and_requeues_when_both_providers_are_down(
    make: Any, store: Any, policy: RetryPolicy
) -> None:
    email = make.email()
    store.add(email)
    primary, secondary = make.sender(EE, _timeout(EE)), make.sender(SG, _server_error(SG))

    disposition = await _deliver(email.id, 2, store, [primary, secondary], policy)

    assert disposition.action is Action.RETRY
    assert disposition.status is QUEUED
    assert disposition.delay_seconds == policy.backoff(2) == 20
    assert store.status(email.id) is QUEUED
    assert store.after_claim(email.id) == [(FAILED, EE), (FAILED, SG), (QUEUED, None)]
    released = store.history[email.id][-1].detail
    assert released["outcome"] == "retry_scheduled"
    assert released["retry_in_seconds"] == 20


async def test_retry_honours_the_providers_retry_after_hint(
    make: Any, store: Any, policy: RetryPolicy
) -> None:
    email = make.email()
    store.add(email)
    primary = make.sender(EE, _server_error(EE))
    secondary = make.sender(SG, _server_error(SG, 429, retry_after_seconds=120.0))

    disposition = await _deliver(email.id, 1, store, [primary, secondary], policy)

    assert (disposition.action, disposition.delay_seconds) == (Action.RETRY, 120)


@pytest.mark.parametrize("receive_count", [5, 6])
async def test_fails_and_dead_letters_when_both_are_down_on_the_last_receive(
    make: Any, store: Any, policy: RetryPolicy, receive_count: int
) -> None:
    email = make.email()
    store.add(email)
    primary = make.sender(EE, _server_error(EE))
    secondary = make.sender(SG, _server_error(SG, 502))

    disposition = await _deliver(email.id, receive_count, store, [primary, secondary], policy)

    assert (disposition.action, disposition.status) == (Action.DEAD_LETTER, FAILED)
    assert store.status(email.id) is FAILED
    assert store.after_claim(email.id) == [(FAILED, EE), (FAILED, SG), (FAILED, SG)]
    final = store.history[email.id][-1].detail
    assert final["outcome"] == "out_of_attempts"
    assert "sendgrid HTTP 502" in final["last_error"]


async def test_a_missing_email_is_retried_after_the_poison_backoff(
    make: Any, store: Any, policy: RetryPolicy
) -> None:
    primary = make.sender(EE, _receipt(EE))

    disposition = await _deliver(make.email().id, 1, store, [primary], policy)

    assert disposition.action is Action.RETRY
    assert disposition.delay_seconds == policy.poison_backoff_seconds
    assert primary.calls == []


@pytest.mark.parametrize("final", [SENT, FAILED])
async def test_a_redelivered_final_email_is_deleted_without_calling_any_provider(
    make: Any, store: Any, policy: RetryPolicy, final: EmailStatus
) -> None:
    email = make.email()
    store.add(email, final)
    primary, secondary = make.sender(EE, _receipt(EE)), make.sender(SG, _receipt(SG))

    disposition = await _deliver(email.id, 2, store, [primary, secondary], policy)

    assert disposition.action is Action.DELETE
    assert primary.calls == secondary.calls == []
    assert store.status(email.id) is final


async def test_delivering_the_same_message_twice_calls_the_provider_once(
    make: Any, store: Any, policy: RetryPolicy
) -> None:
    email = make.email()
    store.add(email)
    primary = make.sender(EE, _receipt(EE))

    first = await _deliver(email.id, 1, store, [primary], policy)
    second = await _deliver(email.id, 2, store, [primary], policy)

    assert (first.action, second.action) == (Action.DELETE, Action.DELETE)
    assert len(primary.calls) == 1


async def test_an_email_claimed_elsewhere_is_retried_after_the_lease(
    make: Any, store: Any, policy: RetryPolicy
) -> None:
    email = make.email()
    store.add(email, EmailStatus.PROCESSING, attempts=1, lease_remaining_seconds=12.4)
    primary = make.sender(EE, _receipt(EE))

    disposition = await _deliver(email.id, 2, store, [primary], policy)

    assert disposition.action is Action.RETRY
    assert disposition.delay_seconds >= 12.4
    assert disposition.delay_seconds <= 14
    assert primary.calls == []


async def test_tries_the_providers_in_the_configured_order(
    make: Any, store: Any, policy: RetryPolicy
) -> None:
    email = make.email()
    store.add(email)
    calls: list[str] = []
    sendgrid = make.sender(SG, _server_error(SG), log=calls)
    elastic = make.sender(EE, _receipt(EE), log=calls)

    disposition = await _deliver(email.id, 1, store, [sendgrid, elastic], policy)

    assert calls == [SG, EE]
    assert store.after_claim(email.id) == [(FAILED, SG), (SENT, EE)]
    assert disposition.status is SENT


def test_backoff_doubles_with_each_receive() -> None:
    policy = RetryPolicy(
        max_attempts=10,
        backoff_base_seconds=10,
        backoff_max_seconds=10_000,
        poison_backoff_seconds=1,
    )
    assert [policy.backoff(count) for count in (1, 2, 3, 4, 5)] == [10, 20, 40, 80, 160]


def test_backoff_is_capped(policy: RetryPolicy) -> None:
    assert policy.backoff(6) == 300
    assert policy.backoff(30) == 300


def test_backoff_honours_a_longer_retry_after_hint(policy: RetryPolicy) -> None:
    assert policy.backoff(1, hint=45.0) == 45
    assert policy.backoff(1, hint=45.2) == 46  # never earlier than the provider asked
    assert policy.backoff(3, hint=5.0) == 40  # a shorter hint does not shorten the backoff


def test_backoff_caps_a_retry_after_hint(policy: RetryPolicy) -> None:
    assert policy.backoff(1, hint=3600.0) == 300


@pytest.mark.parametrize("status", [EmailStatus.CANCELED, EmailStatus.SCHEDULED])
async def test_drops_the_message_of_a_canceled_or_not_yet_due_email_without_sending(
    make: Any, store: Any, policy: RetryPolicy, status: EmailStatus
) -> None:
    email = make.email()
    store.add(email, status)
    primary, secondary = make.sender(EE, _receipt(EE)), make.sender(SG, _receipt(SG))

    disposition = await _deliver(email.id, 1, store, [primary, secondary], policy)

    assert (disposition.action, disposition.status, disposition.dropped) == (
        Action.DELETE,
        status,
        True,
    )
    assert primary.calls == secondary.calls == []
    assert store.status(email.id) is status
    assert store.after_claim(email.id) == []
