"""Signed webhooks out, black-box: a real HTTP receiver that verifies every request with the
Standard Webhooks library gets each status change of the tenant's emails; the API lists the
attempts, replays one, sends a test event; URLs that would reach private addresses are refused.
"""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from email_flows import SENT_OR_LATER, submit, wait_for_final
from mailstack_testing.recording import ReceivedWebhook, WebhookReceiver
from mailstack_testing.waiting import eventually
from test_security import _client, _tenant_key

STATUS_EVENTS = ["email.queued", "email.processing", "email.sent"]


def register(gateway: httpx.Client, receiver: WebhookReceiver, events: list[str]) -> dict[str, Any]:
    response = gateway.post("/v1/webhooks", json={"url": receiver.url, "events": events})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    receiver.secret = created["secret"]
    return created


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as started:
        yield started


@pytest.fixture
def endpoint(gateway: httpx.Client, receiver: WebhookReceiver) -> Iterator[dict[str, Any]]:
    created = register(gateway, receiver, STATUS_EVENTS)
    yield created
    gateway.delete(f"/v1/webhooks/{created['id']}")


def events_of(receiver: WebhookReceiver, email_id: str) -> list[ReceivedWebhook]:
    return [
        hook
        for hook in receiver.received()
        if hook.payload.get("data", {}).get("email_id") == email_id
    ]


def wait_for_types(
    receiver: WebhookReceiver, email_id: str, types: list[str]
) -> list[ReceivedWebhook]:
    return eventually(
        lambda: events_of(receiver, email_id),
        30,
        interval=0.1,
        until=lambda hooks: set(types) <= {hook.payload["type"] for hook in hooks},
        what=f"{types} of email {email_id} at the receiver",
    )


def test_a_receiver_gets_each_status_change_signed_with_a_stable_id(
    gateway: httpx.Client, receiver: WebhookReceiver, endpoint: dict[str, Any]
) -> None:
    assert endpoint["secret"].startswith("whsec_")
    assert endpoint["events"] == sorted(STATUS_EVENTS)
    assert endpoint["enabled"] is True

    email_id = submit(gateway)
    assert wait_for_final(gateway, email_id)["status"] in SENT_OR_LATER
    received = wait_for_types(receiver, email_id, STATUS_EVENTS)

    assert all(hook.verified for hook in received)
    by_type = {hook.payload["type"]: hook for hook in received}
    sent = by_type["email.sent"].payload
    assert sent["data"]["status"] == "SENT"
    assert sent["data"]["provider"] in ("elasticemail", "sendgrid")
    assert sent["timestamp"].endswith("Z")
    assert len({hook.id for hook in by_type.values()}) == 3
    assert all(hook.id.startswith("msg_") for hook in received)


def test_deliveries_are_listed_and_one_is_replayed_with_the_same_event_id(
    gateway: httpx.Client, receiver: WebhookReceiver, endpoint: dict[str, Any]
) -> None:
    email_id = submit(gateway)
    [queued] = [
        hook
        for hook in wait_for_types(receiver, email_id, ["email.queued"])
        if hook.payload["type"] == "email.queued"
    ]
    deliveries = eventually(
        lambda: gateway.get(f"/v1/webhooks/{endpoint['id']}/deliveries").json()["items"],
        10,
        until=lambda items: any(item["event_id"] == queued.id for item in items),
        what="the attempt listed",
    )
    [attempt] = [item for item in deliveries if item["event_id"] == queued.id]
    assert attempt["status_code"] == 204
    assert attempt["error"] is None
    assert attempt["event_type"] == "email.queued"
    assert attempt["duration_ms"] >= 0

    replay = gateway.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{attempt['id']}/replay")
    assert replay.status_code == 202, replay.text
    assert replay.json()["event_id"] == queued.id
    again = eventually(
        lambda: [hook for hook in receiver.received() if hook.id == queued.id],
        15,
        until=lambda hooks: len(hooks) >= 2,
        what="the replayed event",
    )
    assert again[-1].body == queued.body
    assert again[-1].verified


def test_a_test_event_arrives_and_a_tampered_event_is_refused(
    gateway: httpx.Client, receiver: WebhookReceiver, endpoint: dict[str, Any]
) -> None:
    queued = gateway.post(f"/v1/webhooks/{endpoint['id']}/test")
    assert queued.status_code == 202, queued.text
    event_id = queued.json()["event_id"]
    [hook] = eventually(
        lambda: [h for h in receiver.received() if h.id == event_id],
        15,
        what="the test event",
    )
    assert hook.verified
    assert hook.payload["type"] == "webhook.test"

    tampered = hook.body.replace(b"webhook.test", b"email.sent")
    signed = {name: value for name, value in hook.headers.items() if name.startswith("webhook-")}
    response = httpx.post(receiver.url, content=tampered, headers=signed, timeout=5)
    assert response.status_code == 401
    assert not receiver.received()[-1].verified


def test_endpoints_are_listed_without_secrets_and_deleted(
    gateway: httpx.Client, receiver: WebhookReceiver
) -> None:
    created = register(gateway, receiver, ["*"])
    path = f"/v1/webhooks/{created['id']}"

    listed = gateway.get("/v1/webhooks")
    assert listed.status_code == 200
    [mine] = [item for item in listed.json()["items"] if item["id"] == created["id"]]
    assert "secret" not in mine
    assert mine["events"] == ["*"]
    one = gateway.get(path)
    assert one.status_code == 200
    assert "secret" not in one.json()
    assert one.json()["disabled_reason"] is None

    assert gateway.delete(path).status_code == 204
    assert gateway.get(path).status_code == 404
    assert gateway.delete(path).status_code == 404
    assert gateway.post(f"{path}/test").status_code == 404
    assert gateway.post(f"{path}/enable").status_code == 404


@pytest.mark.parametrize(
    ("url", "events", "field"),
    [
        ("https://169.254.169.254/latest/meta-data/", ["*"], "url"),
        ("https://10.0.0.1/hook", ["*"], "url"),
        ("https://[::1]/hook", ["*"], "url"),
        ("https://[::ffff:169.254.169.254]/hook", ["*"], "url"),
        ("http://example.org/hook", ["*"], "url"),
        ("https://127.0.0.1/hook", ["email.nonsense"], "events[0]"),
    ],
)
def test_urls_reaching_private_addresses_and_unknown_events_are_refused(
    gateway: httpx.Client, url: str, events: list[str], field: str
) -> None:
    response = gateway.post("/v1/webhooks", json={"url": url, "events": events})
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == [field]


def test_another_tenant_neither_sees_nor_touches_an_endpoint(
    stack: Any, gateway: httpx.Client, endpoint: dict[str, Any]
) -> None:
    _, key = _tenant_key(stack)
    path = f"/v1/webhooks/{endpoint['id']}"
    with _client(stack, key) as other:
        assert other.get("/v1/webhooks").json()["items"] == []
        assert other.get(path).status_code == 404
        assert other.get(f"{path}/deliveries").status_code == 404
        assert other.post(f"{path}/test").status_code == 404
        assert other.post(f"{path}/enable").status_code == 404
        assert other.delete(path).status_code == 404
    assert gateway.get(path).status_code == 200
    enabled = gateway.post(f"{path}/enable")
    assert enabled.status_code == 200, enabled.text
    assert (enabled.json()["enabled"], enabled.json()["disabled_reason"]) == (True, None)
