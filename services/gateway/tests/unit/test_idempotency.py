"""Idempotency-Key on POST /v1/emails: a retried request gets the first answer, nothing more."""

import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from mailstack_gateway import intake
from mailstack_gateway.intake import IdempotencyKey, request_hash

TENANT = "acme"


def _keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def test_the_same_key_and_body_answer_the_first_email_again(
    client: httpx.AsyncClient, writer: Any, publisher: Any, valid_email: dict[str, Any]
) -> None:
    first = await client.post("/v1/emails", json=valid_email, headers=_keyed("order-42"))
    # The same JSON, keys in another order and other spacing: the same request.
    reordered = json.dumps(dict(reversed(list(valid_email.items()))), indent=2)
    again = await client.post(
        "/v1/emails",
        content=reordered,
        headers=_keyed("order-42") | {"content-type": "application/json"},
    )

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(writer.saved) == 1


async def test_the_same_key_with_another_body_is_422_and_stores_nothing(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    await client.post("/v1/emails", json=valid_email, headers=_keyed("order-42"))

    changed = await client.post(
        "/v1/emails", json=valid_email | {"subject": "Other"}, headers=_keyed("order-42")
    )

    assert changed.status_code == 422
    assert changed.json()["errors"][0]["field"] == "Idempotency-Key"
    assert len(writer.saved) == 1


async def test_keys_are_per_tenant(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    ours = await client.post("/v1/emails", json=valid_email, headers=_keyed("k"))
    theirs = await client.post(
        "/v1/emails",
        json=valid_email,
        headers=_keyed("k") | {"Authorization": "Bearer other-tenant"},
    )

    assert ours.json()["id"] != theirs.json()["id"]
    assert len(writer.saved) == 2


async def test_without_a_key_every_post_is_a_new_email(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    await client.post("/v1/emails", json=valid_email)
    await client.post("/v1/emails", json=valid_email)
    assert len(writer.saved) == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
async def test_a_malformed_key_is_422_naming_the_header(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any], key: str
) -> None:
    response = await client.post("/v1/emails", json=valid_email, headers=_keyed(key))

    assert response.status_code == 422
    assert "Idempotency-Key" in [error["field"] for error in response.json()["errors"]]
    assert writer.saved == {}


async def _in_flight(writer: Any, key: str, body: object) -> None:
    """Another request with this key and body claimed it and is still being handled."""
    claim = IdempotencyKey(key, request_hash(body))
    assert await writer.claim_key(TENANT, claim, [uuid.uuid4()]) is None


@pytest.mark.parametrize("path", ["/v1/emails", "/submitEmail"])
async def test_the_same_key_while_the_first_request_is_in_flight_is_409_with_retry_after(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any], path: str
) -> None:
    await _in_flight(writer, "order-42", valid_email)

    response = await client.post(path, json=valid_email, headers=_keyed("order-42"))

    assert response.status_code == 409
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == "idempotency_key_in_flight"
    assert "Idempotency-Key" in response.json()["message"]
    assert writer.saved == {}


async def test_another_body_with_a_key_in_flight_is_still_422(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    await _in_flight(writer, "order-42", valid_email)

    response = await client.post(
        "/v1/emails", json=valid_email | {"subject": "Other"}, headers=_keyed("order-42")
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_a_batch_with_a_key_in_flight_is_409(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    body = {"emails": [valid_email]}
    await _in_flight(writer, "digest", body)

    response = await client.post("/v1/emails/batch", json=body, headers=_keyed("digest"))

    assert response.status_code == 409
    assert response.headers["retry-after"] == "1"
    assert writer.saved == {}


async def test_a_request_that_fails_releases_its_key_and_the_retry_is_accepted(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    writer.save_error = OperationalError("INSERT", {}, Exception("connection lost"))
    failed = await client.post("/v1/emails", json=valid_email, headers=_keyed("order-42"))
    assert failed.status_code == 503
    assert writer.claims == {}

    writer.save_error = None
    retried = await client.post("/v1/emails", json=valid_email, headers=_keyed("order-42"))
    replayed = await client.post("/v1/emails", json=valid_email, headers=_keyed("order-42"))

    assert retried.status_code == replayed.status_code == 202
    assert replayed.json()["id"] == retried.json()["id"]
    assert len(writer.saved) == 1


async def test_a_claim_that_lapsed_and_was_taken_again_makes_the_slow_request_store_nothing(
    writer: Any, attachment_store: Any, valid_email: dict[str, Any]
) -> None:
    """The claim is no longer this request's when its emails come to be stored: it answers as
    the key's holder does (here: still in flight)."""
    key = IdempotencyKey("order-42", request_hash(valid_email))
    email = intake.parse_email(valid_email)

    class LapsingWriter:
        def __getattr__(self, name: str) -> Any:
            return getattr(writer, name)

        async def save_batch(self, *args: Any) -> Any:
            # Meanwhile the claim lapsed and another request with the key took it.
            del writer.claims[(TENANT, key.key)]
            return await writer.save_batch(*args)

    with pytest.raises(intake.IdempotencyKeyInFlightError):
        await intake.accept_email(
            TENANT, email, "{}", LapsingWriter(), key, attachments=attachment_store
        )
    assert writer.saved == {}
