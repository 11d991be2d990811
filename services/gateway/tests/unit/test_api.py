"""The HTTP contract of the gateway, with in-memory fakes behind the routes."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from mailstack_core.status import EmailStatus
from mailstack_gateway.repository import encode_cursor

SUBMIT_PATHS = ["/v1/emails", "/submitEmail"]


def _database_down() -> OperationalError:
    return OperationalError("INSERT INTO emails ...", {}, ConnectionRefusedError("refused"))


@pytest.mark.parametrize("path", SUBMIT_PATHS)
async def test_accepts_a_valid_email_with_202_id_links_and_location(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any], path: str
) -> None:
    response = await client.post(path, json=valid_email)

    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"id", "status", "links"}
    email_id = uuid.UUID(body["id"])
    assert body["status"] == "QUEUED"
    assert body["links"] == {
        "self": f"/v1/emails/{email_id}",
        "history": f"/v1/emails/{email_id}/history",
    }
    assert response.headers["location"] == f"/v1/emails/{email_id}"
    assert list(writer.saved) == [email_id]


async def test_stores_the_parsed_email_and_the_raw_request_body(
    client: httpx.AsyncClient, writer: Any
) -> None:
    raw = (
        '{"from": {"email": "orders@example.com"}, "to": [{"email": "a@example.com"}], '
        '"subject": "S", "text": "T"}'
    )

    response = await client.post(
        "/v1/emails", content=raw, headers={"content-type": "application/json"}
    )

    assert response.status_code == 202
    ((email, stored_body),) = writer.saved.values()
    assert stored_body == raw
    assert email.sender.email == "orders@example.com"


async def _published_or_given_up(writer: Any, publisher: Any) -> None:
    """The inline publisher works off the request path: wait (bounded) until it has tried."""
    for _ in range(200):
        if writer.published or writer.rescheduled:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"nothing published or rescheduled; queue calls: {publisher.batches}")


async def test_publishes_the_accepted_email_and_marks_it_published(
    client: httpx.AsyncClient, writer: Any, publisher: Any, valid_email: dict[str, Any]
) -> None:
    response = await client.post("/v1/emails", json=valid_email)

    email_id = uuid.UUID(response.json()["id"])
    await _published_or_given_up(writer, publisher)
    assert publisher.batches == [[email_id]]
    assert writer.published == [email_id]


async def test_still_answers_202_when_the_queue_is_down(
    client: httpx.AsyncClient, writer: Any, publisher: Any, valid_email: dict[str, Any]
) -> None:
    publisher.error = ConnectionError("SQS unreachable")

    response = await client.post("/v1/emails", json=valid_email)

    assert response.status_code == 202
    assert list(writer.saved) == [uuid.UUID(response.json()["id"])]
    await _published_or_given_up(writer, publisher)
    assert writer.published == []  # the outbox row stays for the relay
    assert len(writer.rescheduled) == 1


@pytest.mark.parametrize("path", SUBMIT_PATHS)
async def test_answers_422_with_every_error_and_stores_nothing(
    client: httpx.AsyncClient, writer: Any, publisher: Any, path: str
) -> None:
    raw = {
        "from": {"email": "nope"},
        "to": [{"email": "ok@example.com"}, {"email": "bad"}],
        "subject": "Hi\r\nBcc: x@example.com",
    }

    response = await client.post(path, json=raw)

    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"errors"}
    assert all(set(error) == {"field", "message"} for error in body["errors"])
    assert {error["field"] for error in body["errors"]} == {
        "from.email",
        "to[1].email",
        "subject",
        "text",
    }
    assert writer.saved == {}
    assert publisher.batches == []


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b'{"from": ', b"\xff\xfe{}"],
    ids=["broken", "empty", "cut", "utf16"],
)
async def test_answers_422_on_the_body_field_for_malformed_json(
    client: httpx.AsyncClient, writer: Any, content: bytes
) -> None:
    response = await client.post(
        "/v1/emails", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [error["field"] for error in errors] == ["body"]
    assert writer.saved == {}


async def test_answers_422_never_500_for_deeply_nested_json(
    client: httpx.AsyncClient, writer: Any, max_request_bytes: int
) -> None:
    nested = b"[" * (max_request_bytes - 10)  # small enough for the limit, too deep to decode

    response = await client.post(
        "/v1/emails", content=nested, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["body"]
    assert writer.saved == {}


async def test_answers_422_never_202_for_a_subject_that_is_not_valid_unicode(
    client: httpx.AsyncClient, writer: Any
) -> None:
    # Valid JSON (an escaped lone surrogate) that no UTF-8 encoder can store or send.
    raw = (
        '{"from": {"email": "orders@example.com"}, "to": [{"email": "a@example.com"}],'
        ' "subject": "Hi \\ud800", "text": "T"}'
    )

    response = await client.post(
        "/v1/emails", content=raw, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["subject"]
    assert writer.saved == {}


async def test_answers_422_when_the_json_is_not_an_object(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/emails", json=[{"to": "x@example.com"}])

    assert response.status_code == 422
    assert response.json() == {"errors": [{"field": "body", "message": "must be a JSON object"}]}


async def test_answers_413_when_the_declared_length_exceeds_the_limit(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any], max_request_bytes: int
) -> None:
    oversized = valid_email | {"text": "x" * (max_request_bytes + 1)}

    response = await client.post("/v1/emails", json=oversized)

    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert writer.saved == {}


async def test_answers_413_when_a_streamed_body_exceeds_the_limit(
    client: httpx.AsyncClient, writer: Any, max_request_bytes: int
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(max_request_bytes // 512 + 2):
            yield b"x" * 512
        yield b'"}'

    response = await client.post(
        "/v1/emails", content=chunks(), headers={"content-type": "application/json"}
    )

    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert writer.saved == {}


async def test_accepts_a_streamed_body_within_the_limit(
    client: httpx.AsyncClient, writer: Any
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"from": {"email": "orders@example.com"}, "to": [{"email": "a@example.com"}],'
        yield b' "subject": "S", "text": "T"}'

    response = await client.post(
        "/v1/emails", content=chunks(), headers={"content-type": "application/json"}
    )

    assert response.status_code == 202
    assert len(writer.saved) == 1


@pytest.mark.parametrize("path", SUBMIT_PATHS)
async def test_answers_503_never_202_when_the_database_is_down(
    client: httpx.AsyncClient,
    writer: Any,
    publisher: Any,
    valid_email: dict[str, Any],
    path: str,
) -> None:
    writer.save_error = _database_down()

    response = await client.post(path, json=valid_email)

    assert response.status_code == 503
    assert response.json()["error"] == "database_unavailable"
    assert "retry-after" in response.headers
    assert "location" not in response.headers
    assert publisher.batches == []


async def test_shows_an_email_with_its_sender_as_from(
    client: httpx.AsyncClient, primary_reader: Any, email_row: Callable[..., SimpleNamespace]
) -> None:
    email_id = uuid.uuid4()
    primary_reader.rows[email_id] = email_row(email_id)

    response = await client.get(f"/v1/emails/{email_id}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(email_id)
    assert body["status"] == "SENT"
    assert body["from"] == {"email": "orders@example.com", "name": "Shop"}
    assert body["to"] == [{"email": "alex@example.com", "name": "Alex"}]
    assert body["provider"] == "elasticemail"
    assert body["links"]["history"] == f"/v1/emails/{email_id}/history"


@pytest.mark.parametrize("suffix", ["", "/history"])
async def test_answers_404_json_for_an_unknown_id(client: httpx.AsyncClient, suffix: str) -> None:
    email_id = uuid.uuid4()

    response = await client.get(f"/v1/emails/{email_id}{suffix}")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "not_found"
    assert str(email_id) in response.json()["message"]


@pytest.mark.parametrize("suffix", ["", "/history"])
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "1234", "%00"])
async def test_answers_422_never_500_for_a_malformed_id(
    client: httpx.AsyncClient, suffix: str, bad_id: str
) -> None:
    response = await client.get(f"/v1/emails/{bad_id}{suffix}")

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["email_id"]


async def test_answers_503_when_the_database_is_down_on_a_read(
    client: httpx.AsyncClient, primary_reader: Any
) -> None:
    async def failing_get(*_: object) -> None:
        raise _database_down()

    primary_reader.get = failing_get

    response = await client.get(f"/v1/emails/{uuid.uuid4()}")

    assert response.status_code == 503


async def test_lists_the_history_oldest_first(
    client: httpx.AsyncClient,
    primary_reader: Any,
    email_row: Callable[..., SimpleNamespace],
    history_row: Callable[..., SimpleNamespace],
) -> None:
    email_id = uuid.uuid4()
    primary_reader.rows[email_id] = email_row(email_id)
    primary_reader.histories[email_id] = [
        history_row("QUEUED", None, 0, outcome="accepted"),
        history_row("PROCESSING", None, 1, attempt=1),
        history_row("FAILED", "elasticemail", 2, outcome="unknown", http_status=None),
        history_row("SENT", "sendgrid", 3, message_id="sg-1"),
    ]

    response = await client.get(f"/v1/emails/{email_id}/history")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(email_id)
    assert [(entry["status"], entry["provider"]) for entry in body["history"]] == [
        ("QUEUED", None),
        ("PROCESSING", None),
        ("FAILED", "elasticemail"),
        ("SENT", "sendgrid"),
    ]
    assert set(body["history"][0]) == {"status", "provider", "detail", "at"}
    assert body["history"][2]["detail"] == {"outcome": "unknown", "http_status": None}
    stamps = [datetime.fromisoformat(entry["at"]) for entry in body["history"]]
    assert stamps == sorted(stamps)


async def test_reads_from_the_replica_when_it_has_the_email(
    replica_client: httpx.AsyncClient,
    primary_reader: Any,
    replica_reader: Any,
    email_row: Callable[..., SimpleNamespace],
) -> None:
    email_id = uuid.uuid4()
    replica_reader.rows[email_id] = email_row(email_id)

    response = await replica_client.get(f"/v1/emails/{email_id}")

    assert response.status_code == 200
    assert replica_reader.calls == [("get", email_id)]
    assert primary_reader.calls == []


@pytest.mark.parametrize(("suffix", "call"), [("", "get"), ("/history", "history")])
async def test_asks_the_primary_before_404_when_the_replica_lags(
    replica_client: httpx.AsyncClient,
    primary_reader: Any,
    replica_reader: Any,
    email_row: Callable[..., SimpleNamespace],
    suffix: str,
    call: str,
) -> None:
    email_id = uuid.uuid4()
    primary_reader.rows[email_id] = email_row(email_id, status="QUEUED")

    response = await replica_client.get(f"/v1/emails/{email_id}{suffix}")

    assert response.status_code == 200
    assert replica_reader.calls == [(call, email_id)]
    assert primary_reader.calls == [(call, email_id)]


async def test_answers_404_only_after_both_replica_and_primary_miss(
    replica_client: httpx.AsyncClient, primary_reader: Any, replica_reader: Any
) -> None:
    email_id = uuid.uuid4()

    response = await replica_client.get(f"/v1/emails/{email_id}")

    assert response.status_code == 404
    assert replica_reader.calls == [("get", email_id)]
    assert primary_reader.calls == [("get", email_id)]


async def test_lists_a_page_passing_status_limit_and_cursor_to_the_reader(
    client: httpx.AsyncClient, primary_reader: Any, email_row: Callable[..., SimpleNamespace]
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    primary_reader.page_rows = [email_row(first), email_row(second)]
    primary_reader.next_cursor = encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), second)
    cursor = encode_cursor(datetime(2026, 1, 3, tzinfo=UTC), uuid.uuid4())

    response = await client.get(
        "/v1/emails", params={"status": "SENT", "limit": 2, "cursor": cursor}
    )

    assert response.status_code == 200
    assert primary_reader.calls == [("page", EmailStatus.SENT, 2, cursor, None)]
    body = response.json()
    assert [item["id"] for item in body["items"]] == [str(first), str(second)]
    assert body["next_cursor"] == primary_reader.next_cursor
    assert set(body["items"][0]) == {
        "id",
        "status",
        "subject",
        "tags",
        "provider",
        "attempts",
        "created_at",
        "updated_at",
        "links",
    }


async def test_lists_with_default_limit_and_no_filter(
    client: httpx.AsyncClient, primary_reader: Any
) -> None:
    response = await client.get("/v1/emails")

    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}
    assert primary_reader.calls == [("page", None, 50, None, None)]


@pytest.mark.parametrize("cursor", ["garbage!", "bm90LWEtY3Vyc29y", "é"])
async def test_answers_422_for_a_cursor_the_api_did_not_hand_out(
    client: httpx.AsyncClient, cursor: str
) -> None:
    response = await client.get("/v1/emails", params={"cursor": cursor})

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["cursor"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"limit": 201}, "limit"), ({"status": "LOST"}, "status")],
)
async def test_answers_422_for_bad_list_parameters(
    client: httpx.AsyncClient, primary_reader: Any, params: dict[str, Any], field: str
) -> None:
    response = await client.get("/v1/emails", params=params)

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == [field]
    assert primary_reader.calls == []
