"""Operator endpoints (admin scope) under /v1/admin: API keys, breakers, the dead-letter queue.

With them an operator needs only the gateway's URL and an admin-scope key (the `mailstack`
CLI): no database or AWS credentials on a laptop. The admin scope is the operator's, across
tenants: these routes act on any tenant's keys and on the shared queues.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mailstack_core.tables import TENANT_ID_PATTERN
from mailstack_gateway.api import _AUTH_RESPONSES, BEARER, Admin, problem
from mailstack_gateway.auth import Scope
from mailstack_gateway.console.queries import BreakerState, ConsoleQueries
from mailstack_gateway.keys import AsyncKeyAdmin, KeyInfo, UnknownKeyError, UnknownTenantError
from mailstack_gateway.redrive import (
    DeadLetters,
    QueueUnavailableError,
    RedriveRunningError,
    SqsRedrive,
)
from mailstack_gateway.schemas import ErrorBody, FieldError, Problem, SingleLine

log = structlog.get_logger(__name__)

# What a key gets when the request names no scopes: send and read its tenant's email.
DEFAULT_SCOPES = [Scope.SEND, Scope.READ]
# auth.generate_api_key's ids: 64 random bits, hex.
KEY_ID_PATTERN = r"^[0-9a-f]{16}$"
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Every validation error, each naming its field"}
}


@dataclass(frozen=True)
class Operations:
    """What the routes need, built once by main.create_app."""

    keys: AsyncKeyAdmin
    # The console's reading of the breakers: one query and one vocabulary for both.
    breakers: ConsoleQueries
    # None when the gateway is not told the DLQ (EMAIL_DLQ_URL): redrives answer 503.
    redrive: SqsRedrive | None


def get_operations(request: Request) -> Operations:
    operations: Operations = request.app.state.operations
    return operations


OperationsDep = Annotated[Operations, Depends(get_operations)]


class KeyCreate(BaseModel):
    tenant: str | None = Field(
        default=None,
        # What the tenants table accepts: a key may create its tenant.
        pattern=TENANT_ID_PATTERN,
        description="The tenant the key acts for; the caller's own when omitted.",
    )
    name: SingleLine = Field(default="api key", min_length=1, max_length=200)
    scopes: list[Scope] = Field(default=DEFAULT_SCOPES, min_length=1)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)
    create_tenant: bool = Field(default=False, description="Create the tenant if it is missing.")


class KeyPublic(BaseModel):
    """A key without its secret, which is never kept."""

    id: str
    tenant: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyCreated(KeyPublic):
    key: str = Field(description="The whole key (`ms_...`): shown this once, store it now.")


class KeyList(BaseModel):
    items: list[KeyPublic]


class BreakerPublic(BaseModel):
    provider: str
    state: BreakerState
    consecutive_failures: int
    opened_until: datetime | None = Field(
        description="While in the future, every processor skips the provider"
    )
    last_error: str | None
    updated_at: datetime


class BreakerList(BaseModel):
    items: list[BreakerPublic] = Field(
        description="Providers that ever failed; one without a row has a closed breaker"
    )
    read_at: datetime = Field(description="The time the states are judged at")


class RedriveCreate(BaseModel):
    max_messages_per_second: int | None = Field(
        default=None, ge=1, le=500, description="SQS's rate limit for the move; its own default"
    )


class MoveTaskPublic(BaseModel):
    status: Literal["RUNNING", "COMPLETED", "CANCELLING", "CANCELLED", "FAILED"]
    started_at: datetime | None
    messages_moved: int
    messages_to_move: int | None
    failure_reason: str | None
    task_handle: str | None = Field(description="Only while it runs")


class DeadLettersPublic(BaseModel):
    messages: int = Field(description="Messages in the dead-letter queue (SQS's approximation)")
    messages_in_flight: int = Field(description="Of those, received and not yet visible again")
    redrives: list[MoveTaskPublic] = Field(description="The most recent redrives, newest first")


class RedriveStarted(BaseModel):
    task_handle: str
    messages_to_move: int = Field(description="What the DLQ held when the redrive started")


def _key_public(info: KeyInfo) -> dict[str, Any]:
    return {
        "id": info.key_id,
        "tenant": info.tenant_id,
        "name": info.name,
        "scopes": list(info.scopes),
        "created_at": info.created_at,
        "expires_at": info.expires_at,
        "revoked_at": info.revoked_at,
        "last_used_at": info.last_used_at,
    }


def _dead_letters_public(state: DeadLetters) -> DeadLettersPublic:
    return DeadLettersPublic(
        messages=state.messages,
        messages_in_flight=state.messages_in_flight,
        redrives=[
            MoveTaskPublic.model_validate(task, from_attributes=True) for task in state.tasks
        ],
    )


def _no_dead_letter_queue() -> JSONResponse:
    return problem(503, "dead_letter_queue_not_configured", "this gateway has no EMAIL_DLQ_URL")


_QUEUE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_AUTH_RESPONSES,
    503: {"model": Problem, "description": "No EMAIL_DLQ_URL configured, or SQS unreachable"},
}

router = APIRouter(
    prefix="/v1/admin",
    tags=["operations"],
    responses=_AUTH_RESPONSES,
)
# Every route here needs a bearer credential with the admin scope; the document says so.
_SECURED: dict[str, Any] = {"openapi_extra": {"security": BEARER}}


@router.post(
    "/keys",
    **_SECURED,
    status_code=201,
    response_model=KeyCreated,
    responses={
        422: {"model": ErrorBody, "description": "Every validation error; or an unknown tenant"}
    },
    summary="Create an API key, shown once (admin scope)",
)
async def create_key(
    body: KeyCreate, principal: Admin, operations: OperationsDep
) -> KeyCreated | JSONResponse:
    tenant = body.tenant or principal.tenant_id
    expires = timedelta(days=body.expires_in_days) if body.expires_in_days else None
    try:
        info, new = await operations.keys.create_key(
            tenant, body.name, body.scopes, expires, create_tenant=body.create_tenant
        )
    except UnknownTenantError as error:
        message = f"no tenant {error.tenant_id!r} (set create_tenant to create it)"
        errors = ErrorBody(errors=[FieldError(field="tenant", message=message)])
        return JSONResponse(status_code=422, content=errors.model_dump())
    # Operator actions leave an audit trail: what, for whom, and by which credential.
    log.info(
        "admin.key_created",
        key_id=info.key_id,
        tenant=tenant,
        scopes=list(info.scopes),
        by=principal.credential_id,
    )
    return KeyCreated(**_key_public(info), key=new.token)


@router.get(
    "/keys",
    **_SECURED,
    response_model=KeyList,
    responses=_INVALID,
    summary="API keys, never their secrets (admin scope)",
)
async def list_keys(
    _: Admin,
    operations: OperationsDep,
    tenant: Annotated[
        str | None, Query(pattern=TENANT_ID_PATTERN, description="Only this tenant's keys")
    ] = None,
) -> KeyList:
    keys = await operations.keys.list_keys(tenant)
    return KeyList(items=[KeyPublic(**_key_public(info)) for info in keys])


@router.post(
    "/keys/{key_id}/revoke",
    **_SECURED,
    response_model=KeyPublic,
    responses={404: {"model": Problem, "description": "No key with this id"}, **_INVALID},
    summary="Revoke an API key; again is harmless (admin scope)",
    description="Takes effect within AUTH_CACHE_SECONDS on every gateway instance.",
)
async def revoke_key(
    key_id: Annotated[str, Path(pattern=KEY_ID_PATTERN)],
    principal: Admin,
    operations: OperationsDep,
) -> KeyPublic | JSONResponse:
    try:
        info = await operations.keys.revoke_key(key_id)
    except UnknownKeyError as error:
        return problem(404, "not_found", str(error))
    log.info("admin.key_revoked", key_id=key_id, tenant=info.tenant_id, by=principal.credential_id)
    return KeyPublic(**_key_public(info))


@router.get(
    "/breakers",
    **_SECURED,
    response_model=BreakerList,
    summary="Each provider's circuit breaker as the processors share it (admin scope)",
)
async def breakers(_: Admin, operations: OperationsDep) -> BreakerList:
    now = datetime.now(UTC)
    found = await operations.breakers.breakers()
    return BreakerList(
        items=[
            BreakerPublic(
                provider=breaker.provider,
                state=breaker.state(now),
                consecutive_failures=breaker.consecutive_failures,
                opened_until=breaker.opened_until,
                last_error=breaker.last_error,
                updated_at=breaker.updated_at,
            )
            for breaker in found
        ],
        read_at=now,
    )


@router.get(
    "/dead-letters",
    **_SECURED,
    response_model=DeadLettersPublic,
    responses=_QUEUE_RESPONSES,
    summary="The dead-letter queue's depth and its recent redrives (admin scope)",
)
async def dead_letters(_: Admin, operations: OperationsDep) -> DeadLettersPublic | JSONResponse:
    if operations.redrive is None:
        return _no_dead_letter_queue()
    try:
        return _dead_letters_public(await operations.redrive.dead_letters())
    except QueueUnavailableError as error:
        return problem(503, "queue_unavailable", str(error))


@router.post(
    "/dead-letters/redrive",
    **_SECURED,
    status_code=202,
    response_model=RedriveStarted,
    responses={
        **_QUEUE_RESPONSES,
        409: {"model": Problem, "description": "A redrive is running already"},
        **_INVALID,
    },
    summary="Move every message of the dead-letter queue back to the email queue (admin scope)",
    description=(
        "Starts an SQS message move task and answers at once; its progress and the number of "
        "messages moved are in GET /v1/admin/dead-letters. Each moved message is delivered "
        "like any other: an email already final is left as it is."
    ),
)
async def redrive(
    principal: Admin, operations: OperationsDep, body: RedriveCreate | None = None
) -> RedriveStarted | JSONResponse:
    if operations.redrive is None:
        return _no_dead_letter_queue()
    rate = body.max_messages_per_second if body is not None else None
    try:
        handle, before = await operations.redrive.start(rate)
    except RedriveRunningError as error:
        return problem(409, "redrive_running", str(error))
    except QueueUnavailableError as error:
        return problem(503, "queue_unavailable", str(error))
    log.info("admin.redrive_started", messages=before.messages, by=principal.credential_id)
    return RedriveStarted(task_handle=handle, messages_to_move=before.messages)


def install(app: FastAPI, operations: Operations) -> None:
    app.state.operations = operations
    app.include_router(router)
