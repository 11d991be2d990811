"""Scheduled send and cancel at the edge: `send_at` rules, SCHEDULED answers, the cancel endpoint,
and the scheduler's round."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from mailstack_core.status import EmailStatus
from mailstack_gateway import intake, scheduler
from mailstack_gateway.settings import GatewaySettings
from mailstack_testing.waiting import eventually_async

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _errors(raw: object, now: datetime = NOW) -> dict[str, str]:
    with pytest.raises(intake.InvalidEmailError) as caught:
        intake.parse_email(raw, now)
    return {error.field: error.message for error in caught.value.errors}


@pytest.mark.parametrize(
    ("send_at", "expected"),
    [
        ("2026-12-24T09:00:00+01:00", datetime(2026, 12, 24, 8, 0, tzinfo=UTC)),
        ("2026-12-01T12:00:30Z", datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)),
        ("2026-12-31T11:59:59.5-00:00", datetime(2026, 12, 31, 11, 59, 59, 500000, tzinfo=UTC)),
        # Up to a minute in the past: a client's clock a little behind.
        ("2026-12-01T11:59:01Z", datetime(2026, 12, 1, 11, 59, 1, tzinfo=UTC)),
    ],
)
def test_accepts_an_rfc_3339_send_at_with_an_offset_up_to_30_days_ahead(
    valid_email: dict[str, Any], send_at: str, expected: datetime
) -> None:
    email = intake.parse_email(valid_email | {"send_at": send_at}, NOW)

    assert email.send_at == expected
    assert intake.status_on_acceptance(email) is EmailStatus.SCHEDULED


def test_an_email_without_send_at_is_queued_at_once(valid_email: dict[str, Any]) -> None:
    email = intake.parse_email(valid_email, NOW)
    assert (email.send_at, intake.status_on_acceptance(email)) == (None, EmailStatus.QUEUED)


@pytest.mark.parametrize(
    ("send_at", "message"),
    [
        ((NOW + timedelta(days=30, seconds=1)).isoformat(), "at most 30 days ahead"),
        ((NOW - timedelta(seconds=61)).isoformat(), "more than a minute in the past"),
        ("2026-12-24T09:00:00", "RFC 3339 date-time with an offset"),
        ("2026-12-24", "RFC 3339 date-time with an offset"),
        ("24/12/2026 09:00 +01:00", "RFC 3339 date-time with an offset"),
        (1796112000, "RFC 3339 date-time with an offset"),
        ("2026-13-24T09:00:00Z", "datetime"),
    ],
)
def test_refuses_a_send_at_too_far_ahead_in_the_past_or_without_an_offset(
    valid_email: dict[str, Any], send_at: object, message: str
) -> None:
    errors = _errors(valid_email | {"send_at": send_at})

    assert list(errors) == ["send_at"]
    assert message in errors["send_at"]


def test_exactly_30_days_ahead_is_accepted(valid_email: dict[str, Any]) -> None:
    send_at = (NOW + timedelta(days=30)).isoformat()
    assert intake.parse_email(valid_email | {"send_at": send_at}, NOW).send_at is not None


def test_a_bad_send_at_in_a_batch_is_named_from_the_batch(valid_email: dict[str, Any]) -> None:
    far = (NOW + timedelta(days=31)).isoformat()
    with pytest.raises(intake.InvalidEmailError) as caught:
        intake.parse_batch({"emails": [valid_email, valid_email | {"send_at": far}]}, NOW)
    assert [error.field for error in caught.value.errors] == ["emails[1].send_at"]


def _in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def test_a_scheduled_email_is_answered_scheduled_and_is_not_published(
    client: httpx.AsyncClient, writer: Any, publisher: Any, valid_email: dict[str, Any]
) -> None:
    scheduled = await client.post("/v1/emails", json=valid_email | {"send_at": _in(3600)})
    now = await client.post("/v1/emails", json=valid_email)

    assert scheduled.status_code == now.status_code == 202
    assert scheduled.json()["status"] == "SCHEDULED"
    assert now.json()["status"] == "QUEUED"
    # Both were accepted before the inline publisher's first batch went out: had the scheduled
    # one been handed to it, it would be published no later than the other.
    published = await eventually_async(
        lambda: [i for batch in publisher.batches for i in batch], 2, what="a publish"
    )
    assert published == [uuid.UUID(now.json()["id"])]
    assert writer.statuses[uuid.UUID(scheduled.json()["id"])] is EmailStatus.SCHEDULED


async def _accepted(client: httpx.AsyncClient, email: dict[str, Any]) -> str:
    response = await client.post("/v1/emails", json=email)
    assert response.status_code == 202, response.text
    email_id: str = response.json()["id"]
    return email_id


@pytest.mark.parametrize("scheduled", [True, False])
async def test_cancels_a_scheduled_or_queued_email(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any], scheduled: bool
) -> None:
    email = valid_email | {"send_at": _in(3600)} if scheduled else valid_email
    email_id = await _accepted(client, email)

    response = await client.post(f"/v1/emails/{email_id}/cancel")

    assert response.status_code == 200
    assert response.json() == {
        "id": email_id,
        "status": "CANCELED",
        "links": {"self": f"/v1/emails/{email_id}", "history": f"/v1/emails/{email_id}/history"},
    }
    assert writer.statuses[uuid.UUID(email_id)] is EmailStatus.CANCELED


@pytest.mark.parametrize(
    "status", [EmailStatus.PROCESSING, EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.CANCELED]
)
async def test_an_email_claimed_by_a_processor_or_final_is_409_with_its_status(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any], status: EmailStatus
) -> None:
    email_id = await _accepted(client, valid_email)
    writer.statuses[uuid.UUID(email_id)] = status

    response = await client.post(f"/v1/emails/{email_id}/cancel")

    assert response.status_code == 409
    body = response.json()
    assert (body["error"], body["status"]) == ("not_cancelable", status.value)
    assert status.value in body["message"]
    assert writer.statuses[uuid.UUID(email_id)] is status


async def test_cancel_of_an_unknown_or_another_tenants_email_is_404(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    ours = await _accepted(client, valid_email)

    unknown = await client.post(f"/v1/emails/{uuid.uuid4()}/cancel")
    theirs = await client.post(
        f"/v1/emails/{ours}/cancel", headers={"Authorization": "Bearer other-tenant"}
    )

    assert unknown.status_code == theirs.status_code == 404
    assert writer.statuses[uuid.UUID(ours)] is EmailStatus.QUEUED


async def test_cancel_needs_the_send_scope(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    email_id = await _accepted(client, valid_email)
    response = await client.post(
        f"/v1/emails/{email_id}/cancel", headers={"Authorization": "Bearer read-only"}
    )
    assert response.status_code == 403
    assert writer.statuses[uuid.UUID(email_id)] is EmailStatus.QUEUED


class FakeDueEmails:
    def __init__(self, *rounds: list[uuid.UUID]) -> None:
        self.rounds = list(rounds)
        self.limits: list[int] = []

    async def queue_due(self, limit: int) -> list[uuid.UUID]:
        self.limits.append(limit)
        return self.rounds.pop(0) if self.rounds else []


class RecordingSubmitter:
    def __init__(self) -> None:
        self.submitted: list[uuid.UUID] = []

    def submit(self, email_id: uuid.UUID) -> None:
        self.submitted.append(email_id)


async def test_a_scheduler_round_hands_what_became_due_to_the_publisher() -> None:
    due = [uuid.uuid4(), uuid.uuid4()]
    store, publisher = FakeDueEmails(due), RecordingSubmitter()

    assert await scheduler.queue_due_once(store, publisher, limit=10) == 2
    assert await scheduler.queue_due_once(store, publisher, limit=10) == 0

    assert publisher.submitted == due
    assert store.limits == [10, 10]


def test_the_scheduler_may_not_be_set_to_poll_more_than_once_a_second() -> None:
    required = {
        "database_url": "postgresql://u@127.0.0.1:9/db",
        "email_queue_url": "http://q",
        "attachments_bucket": "mailstack-attachments",
    }
    with pytest.raises(ValidationError, match="scheduler_poll_seconds"):
        GatewaySettings(**required, scheduler_poll_seconds=0.5)  # type: ignore[arg-type]
    assert GatewaySettings(**required).scheduler_poll_seconds == 1.0  # type: ignore[arg-type]
