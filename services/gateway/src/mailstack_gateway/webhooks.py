"""Webhook endpoints of a tenant: register, list, delete, enable again, send a test event, list
the delivery attempts and replay an event. The dispatcher (mailstack_processor.webhooks)
delivers them.

Managing endpoints needs the `emails:send` scope, reading them `emails:read`; an endpoint of
another tenant is not found. The signing secret (Standard Webhooks, `whsec_` + base64 of 32
random bytes) is in the answer to POST only.
"""

import asyncio
import base64
import secrets
import socket
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core import webhooks as hooks
from mailstack_core.tables import webhook_deliveries, webhook_endpoints, webhook_events
from mailstack_gateway.api import _LIMITED_RESPONSES, BEARER, Reader, Sender, problem
from mailstack_gateway.repository import AnyRow
from mailstack_gateway.schemas import ErrorBody, FieldError, Problem

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
_SECRET_BYTES = 32
MAX_ENDPOINTS_PER_TENANT = 20
RESOLVE_TIMEOUT_SECONDS = 3.0


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, examples=["https://example.org/mailstack-events"])
    events: list[str] = Field(
        min_length=1,
        max_length=50,
        description="Event types (`email.` + a lower-case email status, e.g. `email.sent`), "
        "or `*` for all of them",
        examples=[["email.sent", "email.failed"]],
    )


class WebhookPublic(BaseModel):
    id: uuid.UUID
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why the dispatcher disabled it (it failed for too long); null while enabled"
    )
    failing_since: datetime | None = Field(
        description="The first failed attempt since the last successful one"
    )
    created_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="The signing secret (`whsec_...`); shown this once only")


class WebhookList(BaseModel):
    items: list[WebhookPublic]


class WebhookDelivery(BaseModel):
    id: int
    event_id: str = Field(description="The event's stable id, its `webhook-id` header")
    event_type: str
    attempted_at: datetime
    status_code: int | None = Field(description="The endpoint's answer; null if none came")
    error: str | None
    duration_ms: int


class WebhookDeliveryPage(BaseModel):
    items: list[WebhookDelivery]
    next_before: int | None = Field(description="Pass as `before` for older attempts")


class WebhookEventQueued(BaseModel):
    event_id: str
    type: str


class WebhookStore:
    """The gateway's SQL on the webhook tables; every query is scoped to one tenant."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, tenant_id: str, url: str, events: list[str], secret: str) -> AnyRow:
        async with self._engine.begin() as connection:
            count = await connection.scalar(
                select(func.count()).where(webhook_endpoints.c.tenant_id == tenant_id)
            )
            if (count or 0) >= MAX_ENDPOINTS_PER_TENANT:
                raise TooManyEndpointsError
            return (
                await connection.execute(
                    insert(webhook_endpoints)
                    .values(
                        id=uuid.uuid4(), tenant_id=tenant_id, url=url, events=events, secret=secret
                    )
                    .returning(*webhook_endpoints.c)
                )
            ).one()

    async def all(self, tenant_id: str) -> list[AnyRow]:
        query = (
            select(webhook_endpoints)
            .where(webhook_endpoints.c.tenant_id == tenant_id)
            .order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.id)
        )
        async with self._engine.connect() as connection:
            return list(await connection.execute(query))

    async def get(self, tenant_id: str, endpoint_id: uuid.UUID) -> AnyRow | None:
        async with self._engine.connect() as connection:
            return (
                await connection.execute(
                    select(webhook_endpoints).where(_owned(tenant_id, endpoint_id))
                )
            ).first()

    async def delete(self, tenant_id: str, endpoint_id: uuid.UUID) -> bool:
        statement = (
            delete(webhook_endpoints)
            .where(_owned(tenant_id, endpoint_id))
            .returning(webhook_endpoints.c.id)
        )
        async with self._engine.begin() as connection:
            return (await connection.execute(statement)).first() is not None

    async def enable(self, tenant_id: str, endpoint_id: uuid.UUID) -> AnyRow | None:
        """Enable the endpoint and forget its failures (it starts a new 3-day window).

        Its events that were waiting are due again as they were; those the dispatcher gave up
        on stay given up (a replay sends one again).
        """
        statement = (
            update(webhook_endpoints)
            .where(_owned(tenant_id, endpoint_id))
            .values(enabled=True, disabled_reason=None, first_failure_at=None)
            .returning(*webhook_endpoints.c)
        )
        async with self._engine.begin() as connection:
            return (await connection.execute(statement)).first()

    async def enqueue_test(self, tenant_id: str, endpoint_id: uuid.UUID) -> str | None:
        """A test event for the endpoint, whatever it subscribes to (a disabled endpoint gets it
        once it is enabled again)."""
        event_id = f"msg_{uuid.uuid4().hex}"
        async with self._engine.begin() as connection:
            endpoint = (
                await connection.execute(
                    select(webhook_endpoints.c.id).where(_owned(tenant_id, endpoint_id))
                )
            ).first()
            if endpoint is None:
                return None
            now = await connection.scalar(select(func.now()))
            assert now is not None
            payload = {
                "type": hooks.TEST_EVENT,
                "timestamp": now.isoformat().replace("+00:00", "Z"),
                "data": {"webhook_id": str(endpoint_id)},
            }
            await connection.execute(
                insert(webhook_events).values(
                    id=event_id, endpoint_id=endpoint_id, type=hooks.TEST_EVENT, payload=payload
                )
            )
        return event_id

    async def deliveries(
        self, tenant_id: str, endpoint_id: uuid.UUID, limit: int, before: int | None
    ) -> list[AnyRow] | None:
        query = (
            select(webhook_deliveries, webhook_events.c.type)
            .join(webhook_events, webhook_events.c.id == webhook_deliveries.c.event_id)
            .where(webhook_deliveries.c.endpoint_id == endpoint_id)
            .order_by(webhook_deliveries.c.id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(webhook_deliveries.c.id < before)
        async with self._engine.connect() as connection:
            owner = select(webhook_endpoints.c.id).where(_owned(tenant_id, endpoint_id))
            if (await connection.execute(owner)).first() is None:
                return None
            return list(await connection.execute(query))

    async def replay(
        self, tenant_id: str, endpoint_id: uuid.UUID, delivery_id: int
    ) -> AnyRow | None:
        """Make the event of that attempt due again, with its id, delivered or not."""
        event = (
            select(webhook_deliveries.c.event_id)
            .join(webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id)
            .where(
                webhook_deliveries.c.id == delivery_id,
                _owned(tenant_id, endpoint_id),
            )
            .scalar_subquery()
        )
        statement = (
            update(webhook_events)
            .where(webhook_events.c.id == event)
            .values(next_attempt_at=func.now(), delivered_at=None, gave_up_at=None)
            .returning(webhook_events.c.id, webhook_events.c.type)
        )
        async with self._engine.begin() as connection:
            return (await connection.execute(statement)).first()


class TooManyEndpointsError(Exception):
    pass


def _owned(tenant_id: str, endpoint_id: uuid.UUID) -> Any:
    return and_(webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.tenant_id == tenant_id)


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal: itself)."""
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
    )
    return sorted({str(info[4][0]) for info in infos})


class WebhookPolicy:
    """Which URLs may be registered: WEBHOOK_HTTP_HOSTS, WEBHOOK_ALLOWED_NETWORKS."""

    def __init__(self, http_hosts: list[str], allowed_networks: str) -> None:
        self.http_hosts = http_hosts
        self.allowed = hooks.parse_networks(allowed_networks)

    async def check(self, url: str) -> str | None:
        """Why `url` may not be registered, or None."""
        try:
            parts = hooks.check_url(url, self.http_hosts)
            addresses = await resolve(parts.host, parts.port)
            if not addresses:
                return f"{parts.host} does not resolve"
            for address in addresses:
                hooks.check_address(parts.host, address, self.allowed)
        except hooks.InvalidWebhookUrlError as error:
            return str(error)
        except (OSError, TimeoutError) as error:
            return f"does not resolve: {error}"
        return None


def _store(request: Request) -> WebhookStore:
    store: WebhookStore = request.app.state.webhooks
    return store


def _policy(request: Request) -> WebhookPolicy:
    policy: WebhookPolicy = request.app.state.webhook_policy
    return policy


def _public(row: AnyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "events": list(row.events),
        "enabled": row.enabled,
        "disabled_reason": row.disabled_reason,
        "failing_since": row.first_failure_at,
        "created_at": row.created_at,
    }


def _invalid(field: str, message: str) -> JSONResponse:
    body = ErrorBody(errors=[FieldError(field=field, message=message)])
    return JSONResponse(status_code=422, content=body.model_dump())


def _not_found(endpoint_id: uuid.UUID, what: str = "webhook") -> JSONResponse:
    return problem(404, "not_found", f"no {what} with id {endpoint_id}")


_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Every validation error, each naming its field"}
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **_LIMITED_RESPONSES,
    **_INVALID,
    404: {"model": Problem, "description": "No such webhook (or another tenant's)"},
}
# Ids of delivery attempts are Postgres bigints.
MAX_ID = 2**63 - 1
_ROUTE: dict[str, Any] = {"tags": ["webhooks"], "openapi_extra": {"security": BEARER}}

router = APIRouter()


@router.post(
    "/v1/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    responses={**_LIMITED_RESPONSES, **_INVALID, 409: {"model": Problem}},
    summary="Register an endpoint for the caller's email events; the secret is shown once",
    **_ROUTE,
)
async def create_webhook(
    body: WebhookCreate, request: Request, principal: Sender
) -> WebhookCreated | JSONResponse:
    known = hooks.subscribable_events()
    for index, event in enumerate(body.events):
        if event not in known:
            return _invalid(f"events[{index}]", f"unknown event type {event!r}")
    if (reason := await _policy(request).check(body.url)) is not None:
        return _invalid("url", reason)
    events = sorted(set(body.events))
    try:
        row = await _store(request).create(principal.tenant_id, body.url, events, generate_secret())
    except TooManyEndpointsError:
        problem = Problem(
            error="too_many_webhooks",
            message=f"a tenant has at most {MAX_ENDPOINTS_PER_TENANT} webhook endpoints",
        )
        return JSONResponse(status_code=409, content=problem.model_dump())
    return WebhookCreated(**_public(row), secret=row.secret)


@router.get(
    "/v1/webhooks",
    response_model=WebhookList,
    responses={**_LIMITED_RESPONSES, **_INVALID},
    summary="The caller's webhook endpoints (never their secrets)",
    **_ROUTE,
)
async def list_webhooks(request: Request, principal: Reader) -> WebhookList:
    rows = await _store(request).all(principal.tenant_id)
    return WebhookList(items=[WebhookPublic(**_public(row)) for row in rows])


@router.get(
    "/v1/webhooks/{webhook_id}",
    response_model=WebhookPublic,
    responses=_NOT_FOUND,
    summary="One endpoint: enabled, or why it was disabled",
    **_ROUTE,
)
async def get_webhook(
    webhook_id: uuid.UUID, request: Request, principal: Reader
) -> WebhookPublic | JSONResponse:
    row = await _store(request).get(principal.tenant_id, webhook_id)
    return _not_found(webhook_id) if row is None else WebhookPublic(**_public(row))


@router.delete(
    "/v1/webhooks/{webhook_id}",
    status_code=204,
    response_class=Response,
    responses=_NOT_FOUND,
    summary="Delete an endpoint and its undelivered events",
    **_ROUTE,
)
async def delete_webhook(webhook_id: uuid.UUID, request: Request, principal: Sender) -> Response:
    if not await _store(request).delete(principal.tenant_id, webhook_id):
        return _not_found(webhook_id)
    return Response(status_code=204)


@router.post(
    "/v1/webhooks/{webhook_id}/enable",
    response_model=WebhookPublic,
    responses=_NOT_FOUND,
    summary="Enable an endpoint the dispatcher disabled; its waiting events are sent again, "
    "those it gave up on stay given up",
    **_ROUTE,
)
async def enable_webhook(
    webhook_id: uuid.UUID, request: Request, principal: Sender
) -> WebhookPublic | JSONResponse:
    row = await _store(request).enable(principal.tenant_id, webhook_id)
    return _not_found(webhook_id) if row is None else WebhookPublic(**_public(row))


@router.post(
    "/v1/webhooks/{webhook_id}/test",
    status_code=202,
    response_model=WebhookEventQueued,
    responses=_NOT_FOUND,
    summary=f"Queue a `{hooks.TEST_EVENT}` event for the endpoint",
    **_ROUTE,
)
async def test_webhook(
    webhook_id: uuid.UUID, request: Request, principal: Sender
) -> WebhookEventQueued | JSONResponse:
    event_id = await _store(request).enqueue_test(principal.tenant_id, webhook_id)
    if event_id is None:
        return _not_found(webhook_id)
    return WebhookEventQueued(event_id=event_id, type=hooks.TEST_EVENT)


@router.get(
    "/v1/webhooks/{webhook_id}/deliveries",
    response_model=WebhookDeliveryPage,
    responses=_NOT_FOUND,
    summary="The endpoint's delivery attempts, newest first",
    **_ROUTE,
)
async def list_deliveries(
    webhook_id: uuid.UUID,
    request: Request,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> WebhookDeliveryPage | JSONResponse:
    rows = await _store(request).deliveries(principal.tenant_id, webhook_id, limit, before)
    if rows is None:
        return _not_found(webhook_id)
    items = [
        WebhookDelivery(
            id=row.id,
            event_id=row.event_id,
            event_type=row.type,
            attempted_at=row.attempted_at,
            status_code=row.status_code,
            error=row.error,
            duration_ms=row.duration_ms,
        )
        for row in rows
    ]
    return WebhookDeliveryPage(
        items=items, next_before=items[-1].id if len(items) == limit else None
    )


@router.post(
    "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
    status_code=202,
    response_model=WebhookEventQueued,
    responses=_NOT_FOUND,
    summary="Send the event of that attempt again, with the same event id",
    **_ROUTE,
)
async def replay_delivery(
    webhook_id: uuid.UUID,
    delivery_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    request: Request,
    principal: Sender,
) -> WebhookEventQueued | JSONResponse:
    row = await _store(request).replay(principal.tenant_id, webhook_id, delivery_id)
    if row is None:
        return problem(404, "not_found", f"no delivery {delivery_id} of {webhook_id}")
    return WebhookEventQueued(event_id=row.id, type=row.type)


def install(app: FastAPI, store: WebhookStore, policy: WebhookPolicy) -> None:
    app.state.webhooks = store
    app.state.webhook_policy = policy
    app.include_router(router)
