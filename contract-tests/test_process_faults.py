"""The processor killed or stopped mid-batch: every accepted email still ends SENT, once."""

import os
import signal
from collections import Counter
from typing import Any

import httpx
import pytest

from email_flows import (
    NO_ELASTICEMAIL_EVENTS,
    SENT_OR_LATER,
    gateway_client,
    history,
    submit,
    wait_for_final,
)
from mailstack_stack.stack import RunningStack
from mailstack_stubs.control import StubControl
from mailstack_testing.fixtures import ExtraEnv
from mailstack_testing.waiting import eventually

pytestmark = pytest.mark.e2e

EMAILS = 12
PROCESSOR_ENV = {
    "RECEIVE_WAIT_SECONDS": "1",
    "MAX_CONCURRENCY": "4",
    "CLAIM_LEASE_SECONDS": "5",
    "RETRY_BACKOFF_BASE_SECONDS": "0.2",
    "BREAKER_FAILURE_THRESHOLD": "1000",
    "EMAIL_DLQ_URL": "",
}
STACK_ENV = {
    "processor": PROCESSOR_ENV,
    # No provider events: an interrupted send that the stub still completes would otherwise
    # be DELIVERED by its event (and so never reclaimed), which is not the path tested here.
    **NO_ELASTICEMAIL_EVENTS,
}


@pytest.fixture(scope="module")
def module_stack_env() -> ExtraEnv:
    """One stack for both tests: each leaves its processor running again, and each looks only
    at its own emails and their sends."""
    return STACK_ENV


@pytest.fixture
def request_cleanup(request: pytest.FixtureRequest) -> Any:
    return request.addfinalizer


def _statuses(gateway: httpx.Client, ids: list[str]) -> Counter[str]:
    return Counter(gateway.get(f"/v1/emails/{email_id}").json()["status"] for email_id in ids)


def _wait_until_some_are_in_flight(gateway: httpx.Client, ids: list[str]) -> None:
    """Until an email is in flight and more than a batch of slots' worth still waits: the
    statuses were read one by one (a loaded machine takes a while), so by the time the test
    acts the sends seen in flight may have ended, but the ones claimed next have not."""
    slots = int(PROCESSOR_ENV["MAX_CONCURRENCY"])
    eventually(
        lambda: _statuses(gateway, ids),
        30,
        until=lambda statuses: (
            statuses["PROCESSING"] and len(ids) - sum(statuses[s] for s in SENT_OR_LATER) > slots
        ),
        what="an email in flight while more than a batch waits",
    )


def _sends_per_email(stub: StubControl, ids: list[str]) -> Counter[str]:
    """Sends the provider really executed (idempotent replays are not sends)."""
    counts: Counter[str] = Counter()
    for message in stub.messages():
        if message["status"] != 200 or message.get("replay"):
            continue
        for email_id in ids:
            if email_id in str(message["body"]):
                counts[email_id] += 1
    return counts


def _run_batch(stack: Any, gateway: httpx.Client) -> tuple[StubControl, list[str]]:
    elasticemail = StubControl(stack.elasticemail_stub_url)
    # Sends stay in flight long enough to interrupt, even when the statuses are slow to read.
    elasticemail.set_behaviour("ok", delay_ms=1500)
    ids = [submit(gateway) for _ in range(EMAILS)]
    _wait_until_some_are_in_flight(gateway, ids)
    return elasticemail, ids


def _exited(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # A dead child of this test process stays a zombie ("Z") until it is reaped.
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_for_exit(pid: int, timeout: float) -> None:
    eventually(lambda: _exited(pid), timeout, interval=0.1, what=f"process {pid} exited")


def test_every_email_is_sent_once_after_the_processor_is_killed_mid_batch(
    module_stack: RunningStack, request_cleanup: Any
) -> None:
    stack = module_stack
    gateway = gateway_client(stack)
    request_cleanup(gateway.close)
    elasticemail, ids = _run_batch(stack, gateway)
    pid = stack.pid("processor")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _wait_for_exit(pid, 10)
    stack.start_component("processor")

    finals = [wait_for_final(gateway, email_id, timeout=120) for email_id in ids]
    assert {email["status"] for email in finals} <= SENT_OR_LATER
    reclaimed = [
        email_id
        for email_id in ids
        if any(entry["detail"].get("reclaimed") for entry in history(gateway, email_id))
    ]
    # The kill interrupted claimed emails; they were reclaimed after their lease lapsed.
    assert reclaimed, "the kill should have interrupted at least one claimed email"
    # Resending a reclaimed email reuses its Idempotency-Key: ElasticEmail replays, never twice.
    assert _sends_per_email(elasticemail, ids) == Counter(dict.fromkeys(ids, 1))


def test_a_terminated_processor_drains_its_batch_and_nothing_is_sent_twice(
    module_stack: RunningStack, request_cleanup: Any
) -> None:
    stack = module_stack
    gateway = gateway_client(stack)
    request_cleanup(gateway.close)
    elasticemail, ids = _run_batch(stack, gateway)
    pid = stack.pid("processor")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    _wait_for_exit(pid, 30)
    # It finished what it had claimed before exiting: no email is left mid-send (PROCESSING).
    assert _statuses(gateway, ids)["PROCESSING"] == 0, _statuses(gateway, ids)
    stack.start_component("processor")

    finals = [wait_for_final(gateway, email_id, timeout=120) for email_id in ids]
    assert {email["status"] for email in finals} <= SENT_OR_LATER
    for email_id in ids:
        entries = history(gateway, email_id)
        assert not any(entry["detail"].get("reclaimed") for entry in entries), email_id
    assert _sends_per_email(elasticemail, ids) == Counter(dict.fromkeys(ids, 1))
