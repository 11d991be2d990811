"""The HTTP contract: every validation error at once, 404s, 413, listing, health, docs."""

import uuid

import httpx
import pytest

from email_flows import an_email, submit

pytestmark = pytest.mark.e2e


def test_reports_every_validation_error_in_one_422(gateway: httpx.Client) -> None:
    response = gateway.post(
        "/v1/emails",
        json={
            "from": {"email": "not-an-address", "name": "Evil\r\nBcc: victim@example.com"},
            "to": [{"email": "user@example.com"}, {"email": "also bad"}],
            "subject": "Hi\nthere",
        },
    )
    assert response.status_code == 422
    errors = response.json()["errors"]
    fields = {error["field"] for error in errors}
    assert {"from.email", "from.name", "to[1].email", "subject", "text"} <= fields
    assert all(error["message"] for error in errors)


def test_missing_to_and_malformed_json_are_422_naming_the_field(gateway: httpx.Client) -> None:
    missing = gateway.post("/v1/emails", json=an_email(to=[]))
    assert missing.status_code == 422
    assert [error["field"] for error in missing.json()["errors"]] == ["to"]

    malformed = gateway.post(
        "/v1/emails", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422
    assert malformed.json()["errors"][0]["field"] == "body"


def test_invalid_email_is_not_stored(gateway: httpx.Client) -> None:
    before = gateway.get("/v1/emails", params={"limit": 1}).json()["items"]
    assert gateway.post("/v1/emails", json=an_email(subject="")).status_code == 422
    after = gateway.get("/v1/emails", params={"limit": 1}).json()["items"]
    assert after == before


def test_oversized_body_is_413(gateway: httpx.Client) -> None:
    # Bodies up to 20 MiB are taken (attachments); one byte more is not.
    response = gateway.post("/v1/emails", json=an_email(text="x" * (20 * 1024 * 1024)))
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_unknown_id_is_404_with_a_json_error(gateway: httpx.Client) -> None:
    unknown = uuid.uuid4()
    for path in (f"/v1/emails/{unknown}", f"/v1/emails/{unknown}/history"):
        response = gateway.get(path)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


def test_malformed_id_is_422_not_500(gateway: httpx.Client) -> None:
    response = gateway.get("/v1/emails/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "email_id"


def test_lists_emails_newest_first_with_a_cursor(gateway: httpx.Client) -> None:
    ids = [submit(gateway, an_email(subject=f"page {n}")) for n in range(3)]
    first = gateway.get("/v1/emails", params={"limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert [item["id"] for item in page["items"]] == [ids[2], ids[1]]
    assert page["next_cursor"]
    second = gateway.get("/v1/emails", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert second["items"][0]["id"] == ids[0]


def test_list_rejects_a_cursor_it_did_not_issue(gateway: httpx.Client) -> None:
    response = gateway.get("/v1/emails", params={"cursor": "garbage"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "cursor"


def test_health_readiness_and_docs(gateway: httpx.Client) -> None:
    assert gateway.get("/healthz").status_code == 200
    ready = gateway.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "queue": "ok"}
    assert gateway.get("/docs").status_code == 200
    schema = gateway.get("/openapi.json").json()
    assert "/v1/emails" in schema["paths"]
    assert "EmailCreate" in schema["components"]["schemas"]
