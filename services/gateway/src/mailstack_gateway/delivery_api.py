"""HTTP edge of delivery truth: provider events in (signed, not behind API keys) and the
suppression list (API keys with the usual scopes)."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import EmailStr

from mailstack_gateway import provider_events
from mailstack_gateway.api import _LIMITED_RESPONSES, BEARER, Reader, Sender, _read_body, problem
from mailstack_gateway.delivery_store import ProviderEventStore, SuppressionStore
from mailstack_gateway.event_signatures import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    EventAuthenticationError,
    SendGridVerifier,
    SharedSecretVerifier,
)
from mailstack_gateway.observability import PROVIDER_EVENTS, PROVIDER_EVENTS_REFUSED
from mailstack_gateway.schemas import ErrorBody, Problem
from mailstack_gateway.suppression_schemas import (
    EventsReceived,
    SuppressionCreate,
    SuppressionPage,
    SuppressionPublic,
)

log = structlog.get_logger(__name__)

# OpenAPI security schemes of the provider event routes (main.py adds them to the document).
SENDGRID_SIGNATURE_SCHEME = "sendgridSignature"
ELASTICEMAIL_SECRET_SCHEME = "elasticemailSecret"  # noqa: S105 - a scheme name
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    SENDGRID_SIGNATURE_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": SIGNATURE_HEADER,
        "description": (
            f"SendGrid's ECDSA P-256 signature of `{TIMESTAMP_HEADER}` + the raw body, verified "
            "with SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY"
        ),
    },
    ELASTICEMAIL_SECRET_SCHEME: {
        "type": "apiKey",
        "in": "query",
        "name": provider_events.SECRET_PARAMETER,
        "description": "ELASTICEMAIL_NOTIFICATION_SECRET, in the notification URL",
    },
}


@dataclass
class DeliveryServices:
    """What these routes need, built once by main.create_app."""

    events: ProviderEventStore
    suppressions: SuppressionStore
    max_request_bytes: int
    # None: not configured, and every request to that provider's route is refused.
    sendgrid: SendGridVerifier | None = None
    elasticemail: SharedSecretVerifier | None = None
    clock: Callable[[], float] = field(default=time.time)


def get_delivery(request: Request) -> DeliveryServices:
    services: DeliveryServices = request.app.state.delivery
    return services


DeliveryDep = Annotated[DeliveryServices, Depends(get_delivery)]

router = APIRouter()

_EVENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": EventsReceived, "description": "Recorded (duplicates and unknown emails too)"},
    400: {"model": Problem, "description": "Verified, but not events in the provider's format"},
    401: {"model": Problem, "description": "Not shown to come from the provider; nothing stored"},
    503: {"model": Problem, "description": "Database unavailable; the provider retries"},
}


def _refused(provider: str, reason: str, message: str) -> JSONResponse:
    PROVIDER_EVENTS_REFUSED.labels(provider=provider, reason=reason).inc()
    log.warning("provider_event.refused", provider=provider, reason=reason, detail=message)
    return problem(401, "unauthenticated", "the event's origin could not be verified")


def _malformed(provider: str, error: Exception) -> JSONResponse:
    log.warning("provider_event.malformed", provider=provider, error=str(error))
    return problem(400, "malformed_events", str(error))


async def _record(
    provider: str, events: list[provider_events.ProviderEvent], delivery: DeliveryServices
) -> EventsReceived:
    recorded = await provider_events.record_events(events, delivery.events)
    for result in provider_events.EventResult:
        if count := recorded.count(result):
            PROVIDER_EVENTS.labels(provider=provider, result=result.value).inc(count)
    return EventsReceived(
        received=len(events),
        recorded=recorded.count(provider_events.EventResult.RECORDED),
        duplicates=recorded.count(provider_events.EventResult.DUPLICATE),
        unknown_emails=recorded.count(provider_events.EventResult.UNKNOWN_EMAIL),
        ignored=recorded.count(provider_events.EventResult.IGNORED),
    )


@router.post(
    "/v1/provider-events/sendgrid",
    response_model=EventsReceived,
    responses=_EVENT_RESPONSES,
    openapi_extra={
        "security": [{SENDGRID_SIGNATURE_SCHEME: []}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "array", "items": {}}}},
        },
    },
    tags=["provider events"],
    summary="SendGrid's Event Webhook: a signed batch of events (called by SendGrid)",
)
async def sendgrid_events(request: Request, delivery: DeliveryDep) -> EventsReceived | JSONResponse:
    provider = provider_events.SENDGRID
    body = await _read_body(request, delivery.max_request_bytes)
    if delivery.sendgrid is None:
        return _refused(provider, "not_configured", "SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY is unset")
    try:
        delivery.sendgrid.verify(
            request.headers.get(SIGNATURE_HEADER),
            request.headers.get(TIMESTAMP_HEADER),
            body,
            delivery.clock(),
        )
    except EventAuthenticationError as error:
        return _refused(provider, error.reason, str(error))
    try:
        events = provider_events.parse_sendgrid(body)
    except provider_events.MalformedEventsError as error:
        return _malformed(provider, error)
    return await _record(provider, events, delivery)


async def elasticemail_event(
    request: Request, delivery: DeliveryDep
) -> EventsReceived | JSONResponse:
    provider = provider_events.ELASTICEMAIL
    parameters = dict(request.query_params)
    if request.method == "POST":
        # Form-encoded parameters are taken as well as the URL's.
        body = await _read_body(request, delivery.max_request_bytes)
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            parameters |= dict(parse_qsl(body.decode("utf-8", "replace")))
    if delivery.elasticemail is None:
        return _refused(provider, "not_configured", "ELASTICEMAIL_NOTIFICATION_SECRET is unset")
    try:
        delivery.elasticemail.verify(parameters.get(provider_events.SECRET_PARAMETER))
    except EventAuthenticationError as error:
        return _refused(provider, error.reason, str(error))
    try:
        event = provider_events.parse_elasticemail(parameters)
    except provider_events.MalformedEventsError as error:
        return _malformed(provider, error)
    return await _record(provider, [event], delivery)


for _method in ("GET", "POST"):  # a route each: each its own OpenAPI operation id
    router.add_api_route(
        "/v1/provider-events/elasticemail",
        elasticemail_event,
        methods=[_method],
        name=f"elasticemail_event_{_method.lower()}",
        response_model=EventsReceived,
        responses=_EVENT_RESPONSES,
        openapi_extra={"security": [{ELASTICEMAIL_SECRET_SCHEME: []}]},
        tags=["provider events"],
        summary="ElasticEmail's HTTP web notification: one event as URL parameters (called by it)",
        description=(
            "ElasticEmail calls its notification URL with `status`, `messageid`, `transaction`, "
            "`to`, `category`, `postback`, ... as query parameters; the URL configured there "
            "carries `secret`. POST with the same parameters, or form-encoded, is taken too."
        ),
    )


def _public(row: Any) -> SuppressionPublic:
    return SuppressionPublic(
        email=row.email,
        reason=row.reason,
        detail=row.detail,
        email_id=row.email_id,
        provider=row.provider,
        created_at=row.created_at,
    )


@router.get(
    "/v1/suppressions",
    tags=["suppressions"],
    summary="A page of the addresses the caller's emails are not sent to, newest first",
    response_model=SuppressionPage,
    responses={**_LIMITED_RESPONSES, 422: {"model": ErrorBody}},
    openapi_extra={"security": BEARER},
)
async def list_suppressions(
    delivery: DeliveryDep,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> SuppressionPage:
    page = await delivery.suppressions.page(principal.tenant_id, limit, cursor)
    return SuppressionPage(items=[_public(row) for row in page.rows], next_cursor=page.next_cursor)


@router.post(
    "/v1/suppressions",
    response_model=SuppressionPublic,
    status_code=201,
    responses={
        **_LIMITED_RESPONSES,
        200: {"model": SuppressionPublic, "description": "Already suppressed: the entry as is"},
        422: {"model": ErrorBody},
    },
    openapi_extra={"security": BEARER},
    tags=["suppressions"],
    summary="Stop sending to an address",
)
async def add_suppression(
    body: SuppressionCreate, response: Response, delivery: DeliveryDep, principal: Sender
) -> SuppressionPublic:
    row, created = await delivery.suppressions.add(principal.tenant_id, body.email, body.reason)
    if not created:
        response.status_code = 200
    return _public(row)


@router.delete(
    "/v1/suppressions/{email}",
    status_code=204,
    responses={**_LIMITED_RESPONSES, 404: {"model": Problem}},
    openapi_extra={"security": BEARER},
    tags=["suppressions"],
    summary="Send to an address again",
)
async def remove_suppression(email: EmailStr, delivery: DeliveryDep, principal: Sender) -> Response:
    if not await delivery.suppressions.remove(principal.tenant_id, email):
        return problem(404, "not_found", f"{email} is not suppressed")
    return Response(status_code=204)
