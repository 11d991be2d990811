"""A client that retries a POST with its Idempotency-Key gets one email, sent once."""

import uuid

import httpx
import pytest

from email_flows import SENT_OR_LATER, an_email, sends_for, wait_for_final
from mailstack_stubs.control import StubControl

pytestmark = pytest.mark.e2e


def test_a_retried_post_with_its_key_is_one_email_sent_once(
    gateway: httpx.Client, elasticemail: StubControl
) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = gateway.post("/v1/emails", json=an_email(), headers=key)
    retried = gateway.post("/v1/emails", json=an_email(), headers=key)
    changed = gateway.post("/v1/emails", json=an_email(subject="Another"), headers=key)

    assert first.status_code == retried.status_code == 202
    assert retried.json()["id"] == first.json()["id"]
    assert retried.headers["idempotent-replayed"] == "true"
    assert changed.status_code == 422
    email_id = first.json()["id"]
    assert wait_for_final(gateway, email_id)["status"] in SENT_OR_LATER
    assert len(sends_for(elasticemail, email_id)) == 1
