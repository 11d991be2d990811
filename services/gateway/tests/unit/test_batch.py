"""POST /v1/emails/batch: 1 to 100 emails accepted together, in one store call, or none (422)."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mailstack_gateway import intake
from mailstack_testing.waiting import eventually_async

BATCH = "/v1/emails/batch"


@pytest.fixture
def max_request_bytes() -> int:
    """The gateway's default: a hundred small emails fit."""
    return 1_048_576


def _emails(valid_email: dict[str, Any], count: int) -> list[dict[str, Any]]:
    return [valid_email | {"to": [{"email": f"user{n}@example.com"}]} for n in range(count)]


def _fields(response: httpx.Response) -> list[str]:
    return [error["field"] for error in response.json()["errors"]]


async def test_accepts_every_email_in_one_store_call_and_answers_them_in_request_order(
    client: httpx.AsyncClient, writer: Any, publisher: Any, valid_email: dict[str, Any]
) -> None:
    emails = _emails(valid_email, 3)

    response = await client.post(BATCH, json={"emails": emails})

    assert response.status_code == 202
    items = response.json()["items"]
    ids = [uuid.UUID(item["id"]) for item in items]
    assert writer.batches == [ids]
    assert [item["status"] for item in items] == ["QUEUED"] * 3
    assert [item["links"]["self"] for item in items] == [f"/v1/emails/{i}" for i in ids]
    # Each email keeps its own JSON as its request, and goes to its own recipient.
    for email_id, sent in zip(ids, emails, strict=True):
        stored, request_body = writer.saved[email_id]
        assert json.loads(request_body) == sent
        assert str(stored.to[0].email) == sent["to"][0]["email"]
    published = await eventually_async(
        lambda: [i for batch in publisher.batches for i in batch],
        2,
        until=lambda published: len(published) == 3,
        what="the batch's three emails published",
    )
    assert sorted(published) == sorted(ids)


async def test_a_scheduled_email_of_a_batch_is_scheduled_and_only_the_others_are_published(
    client: httpx.AsyncClient, writer: Any, publisher: Any, valid_email: dict[str, Any]
) -> None:
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    emails = [valid_email, valid_email | {"send_at": in_an_hour}]

    response = await client.post(BATCH, json={"emails": emails})

    assert response.status_code == 202, response.text
    queued, scheduled = response.json()["items"]
    assert (queued["status"], scheduled["status"]) == ("QUEUED", "SCHEDULED")
    published = await eventually_async(
        lambda: [i for batch in publisher.batches for i in batch],
        2,
        what="the queued email published",
    )
    assert published == [uuid.UUID(queued["id"])]


async def test_names_every_error_of_every_email_from_the_batch_and_stores_none(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    emails = _emails(valid_email, 5)
    emails[1] = {key: value for key, value in valid_email.items() if key != "subject"}
    emails[2] = "not an email"
    emails[3]["to"] = [{"email": "not-an-address"}]
    emails[4]["cc"] = [{"email": "user4@example.com"}]  # also in to

    response = await client.post(BATCH, json={"emails": emails})

    assert response.status_code == 422
    assert set(_fields(response)) == {
        "emails[1].subject",
        "emails[2]",
        "emails[3].to[0].email",
        "emails[4].cc[0].email",
    }
    assert writer.saved == {}


@pytest.mark.parametrize("count", [0, 101])
async def test_refuses_an_empty_batch_and_one_over_a_hundred(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any], count: int
) -> None:
    response = await client.post(BATCH, json={"emails": _emails(valid_email, count)})

    assert response.status_code == 422
    assert _fields(response) == ["emails"]
    assert f"got {count}" in response.json()["errors"][0]["message"]
    assert writer.saved == {}


async def test_accepts_exactly_a_hundred(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    response = await client.post(BATCH, json={"emails": _emails(valid_email, 100)})

    assert response.status_code == 202
    assert len(response.json()["items"]) == 100
    assert [len(batch) for batch in writer.batches] == [100]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ([], ["body"]),
        ({}, ["emails"]),
        ({"emails": {"from": "x"}}, ["emails"]),
        ({"emails": [], "extra": 1}, ["extra", "emails"]),
    ],
)
async def test_a_body_that_is_not_a_batch_is_422_naming_what_is_wrong(
    client: httpx.AsyncClient, writer: Any, body: object, fields: list[str]
) -> None:
    response = await client.post(BATCH, json=body)

    assert response.status_code == 422
    assert _fields(response) == fields
    assert writer.saved == {}


async def test_a_replayed_batch_answers_the_same_items_and_another_body_is_422(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    key = {"Idempotency-Key": "nightly-digest-2026-12-01"}
    body = {"emails": _emails(valid_email, 2)}

    first = await client.post(BATCH, json=body, headers=key)
    again = await client.post(BATCH, json=body, headers=key)
    changed = await client.post(BATCH, json={"emails": _emails(valid_email, 3)}, headers=key)

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert changed.status_code == 422
    assert _fields(changed) == ["Idempotency-Key"]
    assert len(writer.saved) == 2


async def test_a_batch_counts_against_the_sending_limit_as_its_number_of_emails(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    tight = {"Authorization": "Bearer tight"}  # 2 emails a minute

    two = await client.post(BATCH, json={"emails": _emails(valid_email, 2)}, headers=tight)
    one_more = await client.post(BATCH, json={"emails": _emails(valid_email, 1)}, headers=tight)

    assert two.status_code == 202
    assert two.headers["ratelimit-remaining"] == "0"
    assert one_more.status_code == 429
    assert len(writer.saved) == 2


async def test_a_batch_bigger_than_the_limit_is_refused_whole(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    response = await client.post(
        BATCH, json={"emails": _emails(valid_email, 3)}, headers={"Authorization": "Bearer tight"}
    )

    assert response.status_code == 429
    assert writer.saved == {}


async def test_a_batch_needs_the_send_scope(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    response = await client.post(
        BATCH, json={"emails": [valid_email]}, headers={"Authorization": "Bearer read-only"}
    )

    assert response.status_code == 403
    assert writer.saved == {}


def test_batch_size_counts_what_it_can_and_stays_within_one_and_a_hundred() -> None:
    assert intake.batch_size({"emails": [{}] * 7}) == 7
    assert intake.batch_size({"emails": []}) == 1
    assert intake.batch_size({"emails": [{}] * 500}) == 100
    assert intake.batch_size("garbage") == 1
