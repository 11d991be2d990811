"""Idempotency-Key on POST /v1/emails: a retried request gets the first answer, nothing more."""

import json
from typing import Any

import httpx
import pytest


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
