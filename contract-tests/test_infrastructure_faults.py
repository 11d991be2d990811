"""Postgres or SQS (LocalStack) stopped under a running stack: no 202 is lost, none is faked.

Each test runs a stack on a Postgres or a LocalStack of its own (never the machine's or the
session's shared ones), stops it, and starts it again without touching the services.
"""

from collections import Counter
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from email_flows import (
    NO_ELASTICEMAIL_EVENTS,
    SENT_OR_LATER,
    an_email,
    gateway_client,
    submit,
    wait_for_final,
)
from mailstack_stack.postgres import libpq_url
from mailstack_stubs.control import StubControl
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
# The relay retries a failed publish with a backoff capped here (default 60 s).
GATEWAY_ENV = {"OUTBOX_MAX_BACKOFF_SECONDS": "2"}


@pytest.fixture
def request_cleanup(request: pytest.FixtureRequest) -> Any:
    return request.addfinalizer


def _statuses(gateway: httpx.Client, ids: list[str]) -> Counter[str]:
    return Counter(gateway.get(f"/v1/emails/{email_id}").json()["status"] for email_id in ids)


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


def _outbox_row(stack: Any, email_id: str) -> tuple[int, str | None] | None:
    """(attempts, last_error) of the email's outbox row: None once it was published."""
    with psycopg.connect(libpq_url(stack.database_url)) as connection:
        row = connection.execute(
            "SELECT attempts, last_error FROM email_outbox WHERE email_id = %s", (email_id,)
        ).fetchone()
    return None if row is None else (row[0], row[1])


def _processor_metric(stack: Any, name: str) -> float:
    """One unlabelled sample of the processor's Prometheus metrics (its health port)."""
    config = stack.stack.config
    response = httpx.get(f"{config.url(config.ports.processor_health)}/metrics", timeout=5)
    response.raise_for_status()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"the processor exports no {name}")


def _accepted_once_back(gateway: httpx.Client, timeout: float) -> str:
    """POST until the gateway accepts again; every answer before that must be a 503."""

    def post() -> httpx.Response:
        response = gateway.post("/v1/emails", json=an_email())
        assert response.status_code in (202, 503), response.text
        return response

    accepted = eventually(
        post,
        timeout,
        interval=0.2,
        until=lambda response: response.status_code == 202,
        what="the gateway accepting again once Postgres is back",
    )
    email_id: str = accepted.json()["id"]
    return email_id


def test_postgres_restarted_while_processing_loses_nothing_and_never_answers_202_while_down(
    stack_factory: Any, request_cleanup: Any
) -> None:
    # No provider events: an event recorded just before Postgres stops, whose email's SENT then
    # fails to commit, leaves that email DELIVERED with no SENT row (its redelivered message
    # finds it past SENT: nothing to do). Not the path tested here.
    stack = stack_factory(
        {"processor": PROCESSOR_ENV, **NO_ELASTICEMAIL_EVENTS},
        own_postgres=True,
    )
    gateway = gateway_client(stack)
    request_cleanup(gateway.close)
    gateway_pid = stack.pid("gateway")
    elasticemail = StubControl(stack.elasticemail_stub_url)
    elasticemail.set_behaviour("ok", delay_ms=700)  # keep sends in flight long enough to interrupt
    ids = [submit(gateway) for _ in range(EMAILS)]
    eventually(
        lambda: _statuses(gateway, ids),
        30,
        interval=0.1,
        until=lambda statuses: (
            statuses["PROCESSING"] > 0 and sum(statuses[s] for s in SENT_OR_LATER) < len(ids)
        ),
        what="an email in flight while others wait",
    )

    assert stack.stop_component("postgres")
    for _ in range(3):
        response = gateway.post("/v1/emails", json=an_email())
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "database_unavailable"
    assert gateway.get("/readyz").status_code == 503
    # The in-flight emails could not record their outcome (what makes the processor stop
    # receiving): it has met the outage mid-delivery before Postgres comes back.
    eventually(
        lambda: _processor_metric(stack, "mailstack_processor_handling_errors_total"),
        30,
        interval=0.1,
        what="the processor failing to record an outcome",
    )

    stack.start_component("postgres")
    ids.append(_accepted_once_back(gateway, timeout=30))
    assert gateway.get("/readyz").status_code == 200
    assert stack.pid("gateway") == gateway_pid, "the gateway must recover without a restart"

    finals = [wait_for_final(gateway, email_id, timeout=60) for email_id in ids]
    assert {email["status"] for email in finals} <= SENT_OR_LATER
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
    outbox = eventually(
        lambda: _outbox_row(stack, email_id),
        30,
        interval=0.2,
        until=lambda row: row is not None and row[0] >= 2,
        what="two failed publishes recorded in the outbox",
    )
    assert outbox is not None
    assert outbox[1], outbox  # with the queue's error
    assert _statuses(gateway, [email_id]) == Counter({"QUEUED": 1})
    readiness = gateway.get("/readyz")
    assert readiness.status_code == 503
    assert readiness.json()["checks"]["database"] == "ok"

    stack.start_component("localstack")  # and re-creates the queues, as `make up` does

    assert wait_for_final(gateway, email_id, timeout=60)["status"] in SENT_OR_LATER
    assert stack.pid("gateway") == gateway_pid, "the gateway must recover without a restart"
    assert _sends_per_email(elasticemail, [email_id]) == Counter({email_id: 1})
