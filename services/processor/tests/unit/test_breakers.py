"""Circuit breakers in delivery: a provider whose circuit is open is skipped while another is
available, failures are counted (rejections are not), and a success closes the circuit."""

from typing import Any

import pytest

from mailstack_core.status import EmailStatus
from mailstack_processor.delivery import Action, BreakerState, RetryPolicy, deliver
from mailstack_processor.providers.base import (
    ProviderRejectedError,
    ProviderUnavailableError,
    SendReceipt,
)

EE, SG = "elasticemail", "sendgrid"


class InMemoryBreakers:
    """CircuitBreakers over a dict: opens after `threshold` consecutive failures."""

    def __init__(self, threshold: int = 2) -> None:
        self.threshold = threshold
        self.states: dict[str, BreakerState] = {}
        self.successes: list[str] = []

    def open(self, provider: str) -> None:
        self.states[provider] = BreakerState(self.threshold, 30.0)

    async def snapshot(self) -> dict[str, BreakerState]:
        return dict(self.states)

    async def record_success(self, provider: str) -> None:
        self.successes.append(provider)
        self.states[provider] = BreakerState(0, 0.0)

    async def record_failure(self, provider: str, reason: str) -> bool:
        failures = self.states.get(provider, BreakerState(0, 0.0)).consecutive_failures + 1
        opened = failures >= self.threshold
        self.states[provider] = BreakerState(failures, 30.0 if opened else 0.0)
        return opened


@pytest.fixture
def breakers() -> InMemoryBreakers:
    return InMemoryBreakers()


def _receipt(provider: str) -> SendReceipt:
    return SendReceipt(provider, message_id=f"{provider}-msg", http_status=200)


async def _deliver(
    store: Any, senders: list[Any], policy: RetryPolicy, breakers: Any, email: Any
) -> Any:
    return await deliver(email.id, 1, store, senders, policy, 30, breakers=breakers)


async def test_skips_the_primary_while_its_circuit_is_open(
    make: Any, store: Any, policy: RetryPolicy, breakers: InMemoryBreakers
) -> None:
    email = make.email()
    store.add(email)
    breakers.open(EE)
    primary, secondary = make.sender(EE, _receipt(EE)), make.sender(SG, _receipt(SG))

    disposition = await _deliver(store, [primary, secondary], policy, breakers, email)

    assert (disposition.action, disposition.status) == (Action.DELETE, EmailStatus.SENT)
    assert primary.calls == []
    assert store.after_claim(email.id) == [(EmailStatus.SENT, SG)]
    assert store.history[email.id][-1].detail["skipped"] == [EE]


async def test_transient_failures_open_the_circuit_for_later_emails(
    make: Any, store: Any, policy: RetryPolicy, breakers: InMemoryBreakers
) -> None:
    outage = ProviderUnavailableError(EE, "no answer within 3 s", outcome_unknown=True)
    primary, secondary = make.sender(EE, outage), make.sender(SG, _receipt(SG))
    emails = [make.email() for _ in range(4)]
    for email in emails:
        store.add(email)
        await _deliver(store, [primary, secondary], policy, breakers, email)

    # Two timeouts open the circuit (threshold 2); the last two emails skip the primary.
    assert len(primary.calls) == 2
    assert len(secondary.calls) == 4
    assert breakers.states[EE].open_for_seconds > 0


async def test_a_rejection_does_not_count_against_the_circuit(
    make: Any, store: Any, policy: RetryPolicy, breakers: InMemoryBreakers
) -> None:
    rejection = ProviderRejectedError(EE, "invalid recipient", 400)
    primary = make.sender(EE, rejection)
    for _ in range(3):
        email = make.email()
        store.add(email)
        await _deliver(store, [primary], policy, breakers, email)
    assert EE not in breakers.states


async def test_tries_every_provider_when_every_circuit_is_open(
    make: Any, store: Any, policy: RetryPolicy, breakers: InMemoryBreakers
) -> None:
    email = make.email()
    store.add(email)
    breakers.open(EE)
    breakers.open(SG)
    primary, secondary = make.sender(EE, _receipt(EE)), make.sender(SG, _receipt(SG))

    disposition = await _deliver(store, [primary, secondary], policy, breakers, email)

    assert disposition.status is EmailStatus.SENT
    assert primary.calls == [email]
    assert "skipped" not in store.history[email.id][-1].detail


async def test_a_success_after_failures_closes_the_circuit(
    make: Any, store: Any, policy: RetryPolicy, breakers: InMemoryBreakers
) -> None:
    breakers.states[EE] = BreakerState(1, 0.0)  # one failure so far, still closed
    email = make.email()
    store.add(email)

    await _deliver(store, [make.sender(EE, _receipt(EE))], policy, breakers, email)

    assert breakers.successes == [EE]
    assert breakers.states[EE] == BreakerState(0, 0.0)
