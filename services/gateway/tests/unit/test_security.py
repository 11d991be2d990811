"""The HTTP edge's protections: credentials, scopes, tenant isolation, rate limits, headers."""

import json
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

# The tenants of the fake credentials in conftest.py.
TENANT = "acme"
OTHER_TENANT = "globex"

EMAIL_ROUTES = [
    ("POST", "/v1/emails"),
    ("POST", "/submitEmail"),
    ("GET", f"/v1/emails/{uuid.UUID(int=1)}"),
    ("GET", f"/v1/emails/{uuid.UUID(int=1)}/history"),
    ("GET", "/v1/emails"),
]
ADMIN_ROUTES = ["/readyz", "/metrics", "/openapi.json", "/docs"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("method", "path"), EMAIL_ROUTES)
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer unknown-token", "Bearer a b"],
)
async def test_answers_401_with_a_bearer_challenge_without_a_valid_credential(
    client: httpx.AsyncClient,
    writer: Any,
    valid_email: dict[str, Any],
    method: str,
    path: str,
    authorization: str | None,
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    client.headers.pop("Authorization")

    response = await client.request(method, path, json=valid_email, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="mailstack"'
    assert response.json() == {
        "error": "unauthenticated",
        "message": "missing or invalid credentials",
    }
    assert writer.saved == {}


@pytest.mark.parametrize(
    ("token", "method", "path", "scope"),
    [
        ("read-only", "POST", "/v1/emails", "emails:send"),
        ("send-only", "GET", f"/v1/emails/{uuid.UUID(int=1)}", "emails:read"),
        ("send-only", "GET", "/v1/emails", "emails:read"),
        ("send-read", "GET", "/metrics", "admin"),
        ("send-read", "GET", "/readyz", "admin"),
    ],
)
async def test_answers_403_naming_the_scope_a_credential_lacks(
    client: httpx.AsyncClient,
    writer: Any,
    valid_email: dict[str, Any],
    token: str,
    method: str,
    path: str,
    scope: str,
) -> None:
    response = await client.request(method, path, json=valid_email, headers=_bearer(token))

    assert response.status_code == 403
    assert f'scope="{scope}"' in response.headers["www-authenticate"]
    assert response.json()["error"] == "insufficient_scope"
    assert writer.saved == {}


@pytest.mark.parametrize("path", ADMIN_ROUTES)
async def test_operational_endpoints_answer_an_admin(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers=_bearer("admin"))
    assert response.status_code == 200, response.text


async def test_healthz_alone_is_public(client: httpx.AsyncClient) -> None:
    client.headers.pop("Authorization")
    assert (await client.get("/healthz")).status_code == 200


async def test_an_accepted_email_belongs_to_the_senders_tenant(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    response = await client.post("/v1/emails", json=valid_email, headers=_bearer("other-tenant"))

    assert response.status_code == 202
    assert writer.tenants == {uuid.UUID(response.json()["id"]): OTHER_TENANT}


@pytest.mark.parametrize("suffix", ["", "/history"])
async def test_another_tenants_email_is_404_never_403(
    client: httpx.AsyncClient,
    primary_reader: Any,
    email_row: Callable[..., SimpleNamespace],
    suffix: str,
) -> None:
    email_id = uuid.uuid4()
    primary_reader.rows[email_id] = email_row(email_id)  # the fixture tenant's email
    assert (await client.get(f"/v1/emails/{email_id}{suffix}")).status_code == 200

    response = await client.get(f"/v1/emails/{email_id}{suffix}", headers=_bearer("other-tenant"))

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_a_list_is_asked_for_the_callers_tenant_only(
    client: httpx.AsyncClient, primary_reader: Any
) -> None:
    await client.get("/v1/emails", headers=_bearer("other-tenant"))
    await client.get("/v1/emails")

    assert primary_reader.page_tenants == [OTHER_TENANT, TENANT]


async def test_every_answer_to_a_credential_carries_its_rate_limit(
    client: httpx.AsyncClient, valid_email: dict[str, Any]
) -> None:
    first = await client.post("/v1/emails", json=valid_email)
    second = await client.post("/v1/emails", json=valid_email)
    missing = await client.get(f"/v1/emails/{uuid.uuid4()}")

    assert first.headers["ratelimit-limit"] == "1000"
    assert int(first.headers["ratelimit-remaining"]) == 999
    assert int(second.headers["ratelimit-remaining"]) == 998
    assert 0 <= int(first.headers["ratelimit-reset"]) <= 60
    # Reading is counted apart from sending.
    assert missing.status_code == 404
    assert missing.headers["ratelimit-remaining"] == "999"


async def test_answers_429_with_retry_after_over_the_tenants_limit(
    client: httpx.AsyncClient, writer: Any, valid_email: dict[str, Any]
) -> None:
    statuses = [
        (await client.post("/v1/emails", json=valid_email, headers=_bearer("tight"))).status_code
        for _ in range(3)
    ]
    refused = await client.post("/v1/emails", json=valid_email, headers=_bearer("tight"))

    assert statuses == [202, 202, 429]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.json()["error"] == "rate_limited"
    assert len(writer.saved) == 2
    # The read limit is separate: the same key still reads.
    assert (await client.get("/v1/emails", headers=_bearer("tight"))).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/healthz"), ("POST", "/v1/emails"), ("GET", "/nowhere")]
)
async def test_every_response_carries_the_security_headers(
    client: httpx.AsyncClient, valid_email: dict[str, Any], method: str, path: str
) -> None:
    response = await client.request(method, path, json=valid_email)

    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["strict-transport-security"].startswith("max-age=")


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"subject": "Hi\x00there"}, "subject"),
        ({"text": "body\x00"}, "text"),
        ({"html": "<p>\x00</p>"}, "html"),
        ({"from": {"email": "a@example.com", "name": "A\x00"}}, "from.name"),
        ({"to": [{"email": "b@example.com", "name": "B\x00"}]}, "to[0].name"),
        ({"reply_to": {"email": "c@example.com", "name": "C\rD"}}, "reply_to.name"),
        ({"to": [{"email": "b\x00@example.com"}]}, "to[0].email"),
        ({"text": "lone \ud800 surrogate"}, "text"),
    ],
)
async def test_answers_422_naming_the_field_for_nul_and_line_breaks(
    client: httpx.AsyncClient,
    writer: Any,
    valid_email: dict[str, Any],
    override: dict[str, Any],
    field: str,
) -> None:
    body = json.dumps(valid_email | override)  # ASCII, with \u escapes as a client sends them
    response = await client.post(
        "/v1/emails", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["errors"]]
    assert writer.saved == {}
