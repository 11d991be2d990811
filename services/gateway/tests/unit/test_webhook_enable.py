"""POST /v1/webhooks/{id}/enable: the route's scope, tenancy and answer, on an in-memory store."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from limits.aio.storage import MemoryStorage

from mailstack_gateway import api, webhooks
from mailstack_gateway.middleware import GatewayMiddleware
from mailstack_gateway.ratelimit import RateLimiter

from .conftest import (
    AUTH,
    OTHER_TENANT,
    TENANT,
    FakeAttachmentStore,
    FakeAuthenticator,
    FakePublisher,
    FakeReader,
    FakeWriter,
)

FAILED_AT = datetime(2026, 1, 1, tzinfo=UTC)


class FakeWebhookStore:
    """The endpoints of WebhookStore, by tenant; `enable` as the SQL does it."""

    def __init__(self) -> None:
        self.endpoints: dict[uuid.UUID, dict[str, Any]] = {}

    def add(self, tenant_id: str, *, enabled: bool) -> uuid.UUID:
        endpoint_id = uuid.uuid4()
        self.endpoints[endpoint_id] = {
            "id": endpoint_id,
            "tenant_id": tenant_id,
            "url": "https://example.org/hook",
            "events": ["*"],
            "secret": "whsec_x",
            "enabled": enabled,
            "disabled_reason": None if enabled else "failing since 2026-01-01",
            "first_failure_at": None if enabled else FAILED_AT,
            "created_at": FAILED_AT,
        }
        return endpoint_id

    async def enable(self, tenant_id: str, endpoint_id: uuid.UUID) -> Any:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None or endpoint["tenant_id"] != tenant_id:
            return None
        endpoint |= {"enabled": True, "disabled_reason": None, "first_failure_at": None}
        return SimpleNamespace(**endpoint)


@pytest.fixture
def store() -> FakeWebhookStore:
    return FakeWebhookStore()


@pytest.fixture
async def http(store: FakeWebhookStore) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.services = api.Services(
        writer=FakeWriter(),  # type: ignore[arg-type]
        primary_reader=FakeReader(),  # type: ignore[arg-type]
        replica_reader=None,
        publisher=FakePublisher(),  # type: ignore[arg-type]
        attachments=FakeAttachmentStore(),
        max_request_bytes=4096,
        authenticator=FakeAuthenticator(),  # type: ignore[arg-type]
        rate_limiter=RateLimiter(MemoryStorage(), send_per_minute=1000, read_per_minute=1000),
    )
    api.install(app)
    webhooks.install(app, store, webhooks.WebhookPolicy([], ""))  # type: ignore[arg-type]
    app.add_middleware(GatewayMiddleware, quota_state=api.QUOTA_STATE)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway.test", headers=AUTH
    ) as client:
        yield client


async def test_enable_clears_the_reason_and_the_failures(
    http: httpx.AsyncClient, store: FakeWebhookStore
) -> None:
    endpoint_id = store.add(TENANT, enabled=False)
    response = await http.post(f"/v1/webhooks/{endpoint_id}/enable")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["enabled"]) == (str(endpoint_id), True)
    assert (body["disabled_reason"], body["failing_since"]) == (None, None)
    assert "secret" not in body
    assert store.endpoints[endpoint_id]["enabled"] is True


async def test_enabling_an_enabled_endpoint_answers_it_as_it_is(
    http: httpx.AsyncClient, store: FakeWebhookStore
) -> None:
    endpoint_id = store.add(TENANT, enabled=True)
    response = await http.post(f"/v1/webhooks/{endpoint_id}/enable")
    assert response.status_code == 200
    assert response.json()["enabled"] is True


async def test_another_tenants_or_an_unknown_endpoint_is_not_found(
    http: httpx.AsyncClient, store: FakeWebhookStore
) -> None:
    theirs = store.add(OTHER_TENANT, enabled=False)
    for endpoint_id in (theirs, uuid.uuid4()):
        response = await http.post(f"/v1/webhooks/{endpoint_id}/enable")
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
    assert store.endpoints[theirs]["enabled"] is False


async def test_enable_needs_the_send_scope(
    http: httpx.AsyncClient, store: FakeWebhookStore
) -> None:
    endpoint_id = store.add(TENANT, enabled=False)
    response = await http.post(
        f"/v1/webhooks/{endpoint_id}/enable", headers={"Authorization": "Bearer read-only"}
    )
    assert response.status_code == 403
    assert store.endpoints[endpoint_id]["enabled"] is False
    unauthenticated = await http.post(
        f"/v1/webhooks/{endpoint_id}/enable", headers={"Authorization": "Bearer nobody"}
    )
    assert unauthenticated.status_code == 401


def test_the_operation_is_documented() -> None:
    app = FastAPI()
    webhooks.install(app, FakeWebhookStore(), webhooks.WebhookPolicy([], ""))  # type: ignore[arg-type]
    operation = app.openapi()["paths"]["/v1/webhooks/{webhook_id}/enable"]["post"]
    assert set(operation["responses"]) >= {"200", "404"}
    assert operation["security"] == api.BEARER
