"""Postgres or SQS (LocalStack) stopped under a running stack: no 202 is lost, none is faked.

Each test runs a stack on a Postgres or a LocalStack of its own (never the machine's or the
session's shared ones), stops it, and starts it again without touching the services.
"""

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from email_flows import an_email, gateway_client, submit, wait_for_final
from mailstack_stubs.control import StubControl

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
# The relay retries a failed publish with a backoff capped here (default 60 s).
GATEWAY_ENV = {"OUTBOX_MAX_BACKOFF_SECONDS": "2"}


@pytest.fixture
def request_cleanup(request: pytest.FixtureRequest) -> Any:
    return request.addfinalizer


def _statuses(gateway: httpx.Client, ids: list[str]) -> Counter[str]:
    return Counter(gateway.get(f"/v1/emails/{email_id}").json()["status"] for email_id in ids)


def _wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"not within {timeout} s: {what}")


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


def _listed_ids(gateway: httpx.Client) -> set[str]:
    response = gateway.get("/v1/emails", params={"limit": 200})
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def _logged(stack: Any, component: str, event: str) -> Callable[[], bool]:
    return lambda: event in stack.log_file(component).read_text()


def _accepted_once_back(gateway: httpx.Client, timeout: float) -> str:
    """POST until the gateway accepts again; every answer before that must be a 503."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = gateway.post("/v1/emails", json=an_email())
        if response.status_code == 202:
            email_id: str = response.json()["id"]
            return email_id
        assert response.status_code == 503, response.text
        time.sleep(0.2)
    pytest.fail(f"the gateway did not accept again within {timeout} s of Postgres being back")


def test_postgres_restarted_while_processing_loses_nothing_and_never_answers_202_while_down(
    stack_factory: Any, request_cleanup: Any
) -> None:
    stack = stack_factory({"processor": PROCESSOR_ENV}, own_postgres=True)
    gateway = gateway_client(stack)
    request_cleanup(gateway.close)
    gateway_pid = stack.pid("gateway")
    elasticemail = StubControl(stack.elasticemail_stub_url)
    elasticemail.set_behaviour("ok", delay_ms=700)  # keep sends in flight long enough to interrupt
    ids = [submit(gateway) for _ in range(EMAILS)]
    _wait_until(
        "an email in flight",
        lambda: (s := _statuses(gateway, ids))["PROCESSING"] > 0 and s["SENT"] < len(ids),
        timeout=30,
    )

    assert stack.stop_component("postgres")
    for _ in range(3):
        response = gateway.post("/v1/emails", json=an_email())
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "database_unavailable"
    assert gateway.get("/readyz").status_code == 503
    # The in-flight emails could not record their outcome: the processor stops receiving.
    _wait_until("the processor paused", _logged(stack, "processor", "consumer.paused"), 30)

    stack.start_component("postgres")
    ids.append(_accepted_once_back(gateway, timeout=30))
    assert gateway.get("/readyz").status_code == 200
    assert stack.pid("gateway") == gateway_pid, "the gateway must recover without a restart"

    finals = [wait_for_final(gateway, email_id, timeout=60) for email_id in ids]
    assert {email["status"] for email in finals} == {"SENT"}
    assert _logged(stack, "processor", "consumer.resumed")()
    # The refused POSTs left nothing behind: the stack's database holds exactly the 202s.
    assert _listed_ids(gateway) == set(ids)
    # An email whose send was interrupted is resent with its Idempotency-Key: replayed, not sent.
    assert _sends_per_email(elasticemail, ids) == Counter(dict.fromkeys(ids, 1))


def test_an_email_accepted_while_sqs_is_down_is_published_and_sent_when_it_is_back(
    stack_factory: Any, request_cleanup: Any
) -> None:
    stack = stack_factory(
        {"gateway": GATEWAY_ENV, "processor": {"RECEIVE_WAIT_SECONDS": "1"}}, own_localstack=True
    )
    gateway = gateway_client(stack)
    request_cleanup(gateway.close)
    gateway_pid = stack.pid("gateway")
    elasticemail = StubControl(stack.elasticemail_stub_url)

    assert stack.stop_component("localstack")
    email_id = submit(gateway)  # asserts the 202
    # Both the inline publish and the relay's first retry have failed: still only in Postgres.
    _wait_until("a failed publish", _logged(stack, "gateway", "outbox.publish_failed"), 30)
    assert _statuses(gateway, [email_id]) == Counter({"QUEUED": 1})
    readiness = gateway.get("/readyz")
    assert readiness.status_code == 503
    assert readiness.json()["checks"]["database"] == "ok"

    stack.start_component("localstack")  # and re-creates the queues, as `make up` does

    assert wait_for_final(gateway, email_id, timeout=60)["status"] == "SENT"
    assert stack.pid("gateway") == gateway_pid, "the gateway must recover without a restart"
    assert _sends_per_email(elasticemail, [email_id]) == Counter({email_id: 1})
