"""The operator endpoints on the real Postgres and LocalStack: keys, breakers, DLQ redrive."""

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from mailstack_gateway.auth import ALL_SCOPES, Scope
from mailstack_gateway.keys import KeyAdmin
from mailstack_gateway.main import create_app
from mailstack_gateway.settings import GatewaySettings
from mailstack_testing.aws import localstack_clients
from mailstack_testing.waiting import eventually, eventually_async

pytestmark = pytest.mark.integration

TENANT = "operators"


@pytest.fixture
def admin(sync_engine: Engine) -> KeyAdmin:
    KeyAdmin(sync_engine).ensure_tenant(TENANT)
    return KeyAdmin(sync_engine)


def _bearer(admin: KeyAdmin, *scopes: Scope) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin.create_key(TENANT, 'test', scopes)[1].token}"}


@pytest.fixture
def headers(admin: KeyAdmin) -> dict[str, str]:
    return _bearer(admin, *ALL_SCOPES)


async def _client(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, run_relay=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


@pytest.fixture
async def gateway(
    database_url: str, sqs_queues: Any, localstack_endpoint: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(
        database_url=database_url,
        email_queue_url=sqs_queues.email_queue_url,
        email_dlq_url=sqs_queues.email_dlq_url,
        attachments_bucket=sqs_queues.attachments_bucket,
        aws_endpoint_url=localstack_endpoint,
    )
    async for client in _client(settings):
        yield client


async def test_a_key_created_through_the_api_works_is_listed_without_its_secret_and_revoked(
    gateway: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    created = await gateway.post(
        "/v1/admin/keys", json={"name": "ci", "scopes": ["emails:read"]}, headers=headers
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert (key["tenant"], key["name"], key["scopes"]) == (TENANT, "ci", ["emails:read"])
    assert key["key"].startswith(f"ms_{key['id']}_")
    its_own = {"Authorization": f"Bearer {key['key']}"}
    assert (await gateway.get("/v1/emails", headers=its_own)).status_code == 200

    listed = (
        await gateway.get("/v1/admin/keys", params={"tenant": TENANT}, headers=headers)
    ).json()
    mine = [item for item in listed["items"] if item["id"] == key["id"]]
    assert len(mine) == 1
    assert "key" not in mine[0]
    assert mine[0]["revoked_at"] is None
    assert key["key"] not in json.dumps(listed)

    revoked = await gateway.post(f"/v1/admin/keys/{key['id']}/revoke", headers=headers)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    again = await gateway.post(f"/v1/admin/keys/{key['id']}/revoke", headers=headers)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]


async def test_keys_for_another_tenant_need_it_to_exist_or_create_tenant(
    gateway: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    body = {"tenant": "newcomer"}
    refused = await gateway.post("/v1/admin/keys", json=body, headers=headers)
    assert refused.status_code == 422
    assert [error["field"] for error in refused.json()["errors"]] == ["tenant"]
    created = await gateway.post(
        "/v1/admin/keys", json={**body, "create_tenant": True}, headers=headers
    )
    assert created.status_code == 201
    assert created.json()["scopes"] == ["emails:read", "emails:send"]
    listed = await gateway.get("/v1/admin/keys", params={"tenant": "newcomer"}, headers=headers)
    assert [item["id"] for item in listed.json()["items"]] == [created.json()["id"]]


async def test_every_error_of_a_key_request_comes_in_one_body(
    gateway: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    body = {"scopes": ["emails:send", "root"], "expires_in_days": -1, "name": ""}
    response = await gateway.post("/v1/admin/keys", json=body, headers=headers)
    assert response.status_code == 422
    fields = sorted(error["field"] for error in response.json()["errors"])
    assert fields == ["expires_in_days", "name", "scopes[1]"]


@pytest.mark.parametrize("tenant", ["G8", "acme.eu", "acme_eu", "-acme"])
async def test_a_tenant_the_tenants_table_would_refuse_is_422_not_created(
    gateway: httpx.AsyncClient, headers: dict[str, str], tenant: str
) -> None:
    body = {"tenant": tenant, "create_tenant": True}
    response = await gateway.post("/v1/admin/keys", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == ["tenant"]


async def test_revoking_an_unknown_key_is_404(
    gateway: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await gateway.post("/v1/admin/keys/0123456789abcdef/revoke", headers=headers)
    assert (response.status_code, response.json()["error"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/keys"),
        ("POST", "/v1/admin/keys"),
        ("POST", "/v1/admin/keys/0123456789abcdef/revoke"),
        ("GET", "/v1/admin/breakers"),
        ("GET", "/v1/admin/dead-letters"),
        ("POST", "/v1/admin/dead-letters/redrive"),
    ],
)
async def test_operator_routes_refuse_a_key_without_the_admin_scope(
    gateway: httpx.AsyncClient, admin: KeyAdmin, method: str, path: str
) -> None:
    sender = _bearer(admin, Scope.SEND, Scope.READ)
    response = await gateway.request(method, path, headers=sender, json={})
    assert (response.status_code, response.json()["error"]) == (403, "insufficient_scope")
    assert (await gateway.request(method, path, json={})).status_code == 401


async def test_breakers_report_what_the_processors_wrote(
    gateway: httpx.AsyncClient, headers: dict[str, str], sync_engine: Engine
) -> None:
    assert (await gateway.get("/v1/admin/breakers", headers=headers)).json()["items"] == []
    with sync_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO provider_breakers (provider, consecutive_failures, opened_until, "
                "last_error) VALUES "
                "('elasticemail', 3, now() + interval '30 seconds', 'HTTP 503'), "
                "('sendgrid', 4, now() - interval '1 second', 'timeout'), "
                "('spare', 1, NULL, 'HTTP 500')"
            )
        )
    response = await gateway.get("/v1/admin/breakers", headers=headers)
    items = {item["provider"]: item for item in response.json()["items"]}
    assert {name: item["state"] for name, item in items.items()} == {
        "elasticemail": "open",
        "sendgrid": "half-open",
        "spare": "failing",
    }
    assert items["elasticemail"]["consecutive_failures"] == 3
    assert items["sendgrid"]["last_error"] == "timeout"


async def test_redrive_moves_every_dead_letter_back_to_the_email_queue(
    gateway: httpx.AsyncClient,
    headers: dict[str, str],
    sqs_queues: Any,
    localstack_endpoint: str,
) -> None:
    sqs, _ = localstack_clients(localstack_endpoint)
    bodies = {json.dumps({"v": 1, "email_id": str(uuid.uuid4())}) for _ in range(3)}
    for body in bodies:
        sqs.send_message(QueueUrl=sqs_queues.email_dlq_url, MessageBody=body)

    async def depth() -> int:
        response = await gateway.get("/v1/admin/dead-letters", headers=headers)
        assert response.status_code == 200, response.text
        messages: int = response.json()["messages"]
        return messages

    await eventually_async(depth, 10, until=lambda n: n == 3, what="3 dead letters counted")
    started = await gateway.post("/v1/admin/dead-letters/redrive", headers=headers)
    assert started.status_code == 202, started.text
    assert started.json()["messages_to_move"] == 3

    async def last_redrive() -> dict[str, Any]:
        response = await gateway.get("/v1/admin/dead-letters", headers=headers)
        task: dict[str, Any] = response.json()["redrives"][0]
        return task

    task = await eventually_async(
        last_redrive, 30, until=lambda task: task["status"] != "RUNNING", what="redrive done"
    )
    assert (task["status"], task["messages_moved"]) == ("COMPLETED", 3)

    moved: list[str] = []

    def received() -> list[str]:
        response = sqs.receive_message(
            QueueUrl=sqs_queues.email_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        moved.extend(message["Body"] for message in response.get("Messages", []))
        return moved

    eventually(received, 10, interval=0, until=lambda got: len(got) >= 3, what="3 moved")
    assert set(moved) == bodies
    assert await depth() == 0


async def test_dead_letter_routes_answer_503_without_a_dead_letter_queue(
    database_url: str, sqs_queues: Any, localstack_endpoint: str, headers: dict[str, str]
) -> None:
    settings = GatewaySettings(
        database_url=database_url,
        email_queue_url=sqs_queues.email_queue_url,
        attachments_bucket=sqs_queues.attachments_bucket,
        aws_endpoint_url=localstack_endpoint,
    )
    async for client in _client(settings):
        for method, path in (
            ("GET", "/v1/admin/dead-letters"),
            ("POST", "/v1/admin/dead-letters/redrive"),
        ):
            response = await client.request(method, path, headers=headers)
            assert response.status_code == 503
            assert response.json()["error"] == "dead_letter_queue_not_configured"
