"""HTTP edge of the gateway: parse requests, call the use cases, map results and errors."""

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from mailstack_core.status import EmailStatus
from mailstack_core.telemetry import annotate
from mailstack_gateway import cancellation, intake, outbox
from mailstack_gateway.auth import AuthenticationError, MissingScopeError, Principal, Scope
from mailstack_gateway.credentials import Authenticator
from mailstack_gateway.observability import EMAILS_ACCEPTED, EMAILS_REJECTED
from mailstack_gateway.queue import SqsEmailPublisher
from mailstack_gateway.ratelimit import Limit, RateLimiter, RateLimitExceededError
from mailstack_gateway.repository import AnyRow, EmailReader, EmailWriter, InvalidCursorError
from mailstack_gateway.schemas import (
    TAG_PATTERN,
    Address,
    AttachmentPublic,
    EmailAccepted,
    EmailBatchAccepted,
    EmailCanceled,
    EmailHistory,
    EmailPage,
    EmailPublic,
    EmailSummary,
    ErrorBody,
    FieldError,
    HistoryEntry,
    Links,
    NotCancelable,
    Problem,
)

log = structlog.get_logger(__name__)

DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError)


class PayloadTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class Services:
    """What the routes need, built once by main.create_app."""

    def __init__(
        self,
        writer: EmailWriter,
        primary_reader: EmailReader,
        replica_reader: EmailReader | None,
        publisher: SqsEmailPublisher,
        attachments: intake.AttachmentStore,
        max_request_bytes: int,
        authenticator: Authenticator,
        rate_limiter: RateLimiter,
        intake_store: intake.IntakeStore | None = None,
    ) -> None:
        self.inline = outbox.InlinePublisher(writer, publisher)
        # Where accepted emails are written: the writer, or a group commit in front of it.
        self.intake_store = intake_store or writer
        self.attachments = attachments
        self.authenticator = authenticator
        self.rate_limiter = rate_limiter
        self.writer = writer
        self.primary_reader = primary_reader
        self.replica_reader = replica_reader
        self.publisher = publisher
        self.max_request_bytes = max_request_bytes

    @property
    def reader(self) -> EmailReader:
        return self.replica_reader or self.primary_reader


T = TypeVar("T")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

# Set on the request's state by `authorized`; the middleware turns it into RateLimit-* headers.
QUOTA_STATE = "rate_limit_quota"


async def _count(
    request: Request, services: Services, principal: Principal, limit: Limit, cost: int = 1
) -> None:
    """Count the request against the caller's `limit` (429 beyond it)."""
    quota = await services.rate_limiter.check(principal, limit, cost)
    if quota is not None:
        setattr(request.state, QUOTA_STATE, quota)


def authorized(scope: Scope, limit: Limit | None) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the verified caller, holding `scope`, counted against `limit` (None: the
    route counts it itself)."""

    async def dependency(request: Request, services: ServicesDep) -> Principal:
        principal = await services.authenticator.authenticate(request.headers.get("authorization"))
        principal.require(scope)
        if limit is not None:
            await _count(request, services, principal, limit)
        return principal

    return dependency


Sender = Annotated[Principal, Depends(authorized(Scope.SEND, Limit.SEND))]
# A batch is counted once its size is known: as many as its emails.
BatchSender = Annotated[Principal, Depends(authorized(Scope.SEND, None))]
Reader = Annotated[Principal, Depends(authorized(Scope.READ, Limit.READ))]
Admin = Annotated[Principal, Depends(authorized(Scope.ADMIN, None))]

# Every route but /healthz needs a bearer credential; the OpenAPI document says so.
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or invalid credentials"},
    403: {"model": Problem, "description": "The credential lacks the scope this needs"},
}
_LIMITED_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_AUTH_RESPONSES,
    429: {"model": Problem, "description": "Rate limit exceeded; see Retry-After"},
}

router = APIRouter()


def _links(email_id: uuid.UUID) -> Links:
    return Links(self=f"/v1/emails/{email_id}", history=f"/v1/emails/{email_id}/history")


def _not_found(email_id: uuid.UUID) -> JSONResponse:
    return problem(404, "not_found", f"no email with id {email_id}")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(limit)
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLargeError(limit)
    return bytes(body)


_SUBMIT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EmailCreate"}}},
    }
}
_SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_LIMITED_RESPONSES,
    202: {"model": EmailAccepted, "description": "Accepted: stored durably and queued"},
    409: {
        "model": Problem,
        "description": (
            "A request with the same `Idempotency-Key` (and body) is still being handled; "
            "nothing was stored. Retry after `Retry-After` seconds: once it is done, the retry "
            "answers its email(s)"
        ),
        "headers": {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
        },
    },
    413: {"model": Problem, "description": "Request body too large"},
    422: {"model": ErrorBody, "description": "Every validation error, each naming its field"},
    503: {
        "model": Problem,
        "description": "Database or attachment storage unavailable; nothing was accepted",
    },
}


IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",
        description=(
            "Makes a retried POST safe: within 24 h, the same key with the same body answers "
            "the first request's email(s) again (header `Idempotent-Replayed: true`) and stores "
            "nothing; while the first request is still being handled it is 409 (retry after "
            "`Retry-After`); the same key with another body is 422. Scoped to the tenant."
        ),
    ),
]


async def _json_body(request: Request, limit: int) -> tuple[Any, str]:
    """The request's JSON, decoded, and its text."""
    raw_body = await _read_body(request, limit)
    try:
        text = raw_body.decode("utf-8")
        return json.loads(text), text
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise intake.InvalidEmailError(
            [FieldError(field="body", message=f"not valid UTF-8 JSON: {error}")]
        ) from error


def _idempotency(key: str | None, decoded: object) -> intake.IdempotencyKey | None:
    return None if key is None else intake.IdempotencyKey(key, intake.request_hash(decoded))


async def submit_email(
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: Sender,
    idempotency_key: IdempotencyKeyHeader = None,
) -> EmailAccepted:
    decoded, text = await _json_body(request, services.max_request_bytes)
    email = intake.parse_email(decoded)
    email_id, replayed = await intake.accept_email(
        principal.tenant_id,
        email,
        intake.audit_record(text, decoded, email),
        services.intake_store,
        _idempotency(idempotency_key, decoded),
        attachments=services.attachments,
    )
    annotate(email_id=email_id, tenant=principal.tenant_id)
    status = intake.status_on_acceptance(email)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        EMAILS_ACCEPTED.inc()
        if status is EmailStatus.QUEUED:
            # Published off the request path, batched with other new emails: the queue stays
            # out of the request's latency, and the outbox relay publishes whatever this misses.
            services.inline.submit(email_id)
    response.headers["Location"] = f"/v1/emails/{email_id}"
    return EmailAccepted(id=email_id, status=status, links=_links(email_id))


for _path, _name in (("/v1/emails", "submit_email"), ("/submitEmail", "submit_email_alias")):
    router.add_api_route(
        _path,
        submit_email,
        methods=["POST"],
        status_code=202,
        response_model=EmailAccepted,
        responses=_SUBMIT_RESPONSES,
        openapi_extra={**_SUBMIT_DOC, "security": BEARER},
        name=_name,
        summary="Accept an email for delivery",
        tags=["emails"],
    )


_BATCH_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/EmailBatchCreate"}}
        },
    }
}
_BATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_SUBMIT_RESPONSES,
    202: {
        "model": EmailBatchAccepted,
        "description": "Every email accepted, in one transaction; items in request order",
    },
    422: {
        "model": ErrorBody,
        "description": "Nothing accepted: every error of every email, e.g. `emails[3].to[0].email`",
    },
}


@router.post(
    "/v1/emails/batch",
    status_code=202,
    response_model=EmailBatchAccepted,
    responses=_BATCH_RESPONSES,
    openapi_extra={**_BATCH_DOC, "security": BEARER},
    tags=["emails"],
    summary="Accept 1 to 100 emails at once: all of them, or none",
    description=(
        "Each email as in POST /v1/emails (`send_at` included). Stored in one transaction and "
        "published in SQS batches. Counts against the sending rate limit as its number of "
        "emails. An `Idempotency-Key` replays the same items (409 while the first request "
        "with it is still being handled)."
    ),
)
async def submit_batch(
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: BatchSender,
    idempotency_key: IdempotencyKeyHeader = None,
) -> EmailBatchAccepted:
    decoded, _ = await _json_body(request, services.max_request_bytes)
    await _count(request, services, principal, Limit.SEND, intake.batch_size(decoded))
    emails = intake.parse_batch(decoded)
    # Each email's own JSON, as its request body: what the client sent for it (attachments
    # described, not their bytes).
    bodies = [
        intake.audit_record(json.dumps(item, ensure_ascii=False), item, email)
        for item, email in zip(decoded["emails"], emails, strict=True)
    ]
    accepted, replayed = await intake.accept_batch(
        principal.tenant_id,
        list(zip(emails, bodies, strict=True)),
        services.intake_store,
        _idempotency(idempotency_key, decoded),
        attachments=services.attachments,
    )
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        EMAILS_ACCEPTED.inc(len(accepted))
        for item in accepted:
            if item.status is EmailStatus.QUEUED:
                services.inline.submit(item.id)
    return EmailBatchAccepted(
        items=[
            EmailAccepted(id=item.id, status=item.status, links=_links(item.id))
            for item in accepted
        ]
    )


@router.post(
    "/v1/emails/{email_id}/cancel",
    response_model=EmailCanceled,
    responses={
        **_LIMITED_RESPONSES,
        404: {"model": Problem, "description": "No such email (or another tenant's)"},
        409: {
            "model": NotCancelable,
            "description": "A processor claimed it already, or it is final (its status says)",
        },
    },
    openapi_extra={"security": BEARER},
    tags=["emails"],
    summary="Cancel an email that is SCHEDULED, or QUEUED and not yet claimed by a processor",
)
async def cancel_email(
    email_id: uuid.UUID, services: ServicesDep, principal: Sender
) -> EmailCanceled | JSONResponse:
    try:
        await cancellation.cancel_email(principal.tenant_id, email_id, services.writer)
    except cancellation.EmailNotFoundError:
        return _not_found(email_id)
    except cancellation.EmailNotCancelableError as error:
        body = NotCancelable(error="not_cancelable", message=str(error), status=error.status)
        return JSONResponse(status_code=409, content=body.model_dump(mode="json"))
    return EmailCanceled(id=email_id, links=_links(email_id))


async def _read(
    services: Services, query: Callable[[EmailReader], Awaitable[T | None]]
) -> T | None:
    """From the replica if there is one; from the primary when the replica has nothing yet
    (read-your-writes: a lagging replica may not have an email accepted a moment ago)."""
    found = await query(services.reader)
    if found is None and services.replica_reader is not None:
        found = await query(services.primary_reader)
    return found


def _email_public(row: AnyRow) -> EmailPublic:
    return EmailPublic(
        id=row.id,
        status=EmailStatus(row.status),
        provider=row.provider,
        provider_message_id=row.provider_message_id,
        sender=Address(email=row.sender_email, name=row.sender_name),
        to=[Address.model_validate(a) for a in row.to_recipients],
        cc=[Address.model_validate(a) for a in row.cc_recipients],
        bcc=[Address.model_validate(a) for a in row.bcc_recipients],
        reply_to=Address.model_validate(row.reply_to) if row.reply_to else None,
        subject=row.subject,
        headers=row.headers,
        tags=row.tags,
        metadata=row.metadata,
        attachments=[AttachmentPublic.model_validate(a) for a in row.attachments],
        attempts=row.attempts,
        last_error=row.last_error,
        send_at=row.send_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        links=_links(row.id),
    )


@router.get(
    "/v1/emails/{email_id}",
    response_model=EmailPublic,
    response_model_by_alias=True,
    responses={**_LIMITED_RESPONSES, 404: {"model": Problem}},
    openapi_extra={"security": BEARER},
    tags=["emails"],
    summary="An email's current status",
)
async def get_email(
    email_id: uuid.UUID, services: ServicesDep, principal: Reader
) -> EmailPublic | JSONResponse:
    annotate(email_id=email_id, tenant=principal.tenant_id)
    # Another tenant's email is not found, never forbidden: its existence is not revealed.
    row = await _read(services, lambda reader: reader.get(principal.tenant_id, email_id))
    return _not_found(email_id) if row is None else _email_public(row)


@router.get(
    "/v1/emails/{email_id}/history",
    response_model=EmailHistory,
    responses={**_LIMITED_RESPONSES, 404: {"model": Problem}},
    openapi_extra={"security": BEARER},
    tags=["emails"],
    summary="An email's append-only history, oldest first",
)
async def get_history(
    email_id: uuid.UUID, services: ServicesDep, principal: Reader
) -> EmailHistory | JSONResponse:
    annotate(email_id=email_id, tenant=principal.tenant_id)
    rows = await _read(services, lambda reader: reader.history(principal.tenant_id, email_id))
    if rows is None:
        return _not_found(email_id)
    return EmailHistory(
        id=email_id,
        history=[
            HistoryEntry(
                status=EmailStatus(row.status), provider=row.provider, detail=row.detail, at=row.at
            )
            for row in rows
        ],
    )


@router.get(
    "/v1/emails",
    response_model=EmailPage,
    responses={**_LIMITED_RESPONSES, 422: {"model": ErrorBody}},
    openapi_extra={"security": BEARER},
    tags=["emails"],
    summary="A page of the caller's emails, newest first",
)
async def list_emails(
    services: ServicesDep,
    principal: Reader,
    status: EmailStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    tag: Annotated[
        str | None,
        Query(
            pattern=TAG_PATTERN,
            description="Only emails carrying this tag.",
            examples=["welcome"],
        ),
    ] = None,
) -> EmailPage:
    page = await services.reader.page(principal.tenant_id, status, limit, cursor, tag)
    return EmailPage(
        items=[
            EmailSummary(
                id=row.id,
                status=EmailStatus(row.status),
                subject=row.subject,
                tags=row.tags,
                provider=row.provider,
                attempts=row.attempts,
                created_at=row.created_at,
                updated_at=row.updated_at,
                links=_links(row.id),
            )
            for row in page.rows
        ],
        next_cursor=page.next_cursor,
    )


SchemaCheck = Callable[[], Awaitable[bool]]


def get_schema_check(request: Request) -> SchemaCheck:
    check: SchemaCheck = request.app.state.schema_check
    return check


DeepCheck = Annotated[
    bool,
    Query(
        description=(
            "Also check that the database answers and its schema serves this version "
            "(the load balancer's probe): 503 otherwise"
        )
    ),
]


@router.get(
    "/healthz",
    tags=["operations"],
    summary="The process is alive; with deep=1, ready for traffic (public)",
    responses={503: {"description": "deep=1: the database is unreachable or its schema behind"}},
)
async def healthz(request: Request, deep: DeepCheck = False) -> JSONResponse:
    if deep:
        try:
            current = await get_schema_check(request)()
        except Exception as error:  # any failure means: send no traffic here
            log.warning("health.database_unavailable", error=type(error).__name__)
            current = False
        else:
            if not current:
                log.warning("health.schema_behind")
        if not current:
            # No more than that: the details are for /readyz, behind the admin scope.
            return JSONResponse(status_code=503, content={"status": "unavailable"})
    return JSONResponse({"status": "ok"})


_ADMIN_ROUTE: dict[str, Any] = {
    "tags": ["operations"],
    "responses": _AUTH_RESPONSES,
    "openapi_extra": {"security": BEARER},
}


@router.get(
    "/readyz", summary="The database and the queue are reachable (admin scope)", **_ADMIN_ROUTE
)
async def readyz(services: ServicesDep, _: Admin) -> JSONResponse:
    checks: dict[str, str] = {}
    for name, ping in (
        ("database", services.primary_reader.ping),
        ("queue", services.publisher.ping),
    ):
        try:
            await ping()
            checks[name] = "ok"
        except Exception as error:
            checks[name] = f"unavailable: {type(error).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "not_ready", "checks": checks},
    )


def _admin_route(media_type: str) -> dict[str, Any]:
    """An admin-only route answering `media_type`, as its OpenAPI entry says."""
    ok: dict[int | str, dict[str, Any]] = {
        200: {"description": "Successful Response", "content": {media_type: {}}}
    }
    return _ADMIN_ROUTE | {"responses": {**_AUTH_RESPONSES, **ok}}


@router.get(
    "/metrics",
    summary="Prometheus metrics (admin scope)",
    response_class=Response,
    **_admin_route(CONTENT_TYPE_LATEST.split(";")[0]),
)
async def metrics(_: Admin) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", summary="This API's OpenAPI document (admin scope)", **_ADMIN_ROUTE)
async def openapi_document(request: Request, _: Admin) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get(
    "/docs",
    summary="Interactive API docs (admin scope)",
    response_class=HTMLResponse,
    **_admin_route("text/html"),
)
async def docs(request: Request, _: Admin) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=request.app.title)


def problem(
    status: int, error: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error answer with the Problem body every route uses."""
    body = Problem(error=error, message=message)
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def _unauthenticated(_: Request, exc: Exception) -> JSONResponse:
    # One answer for missing, malformed, unknown, revoked and expired credentials alike.
    return problem(
        401, "unauthenticated", str(exc), {"WWW-Authenticate": 'Bearer realm="mailstack"'}
    )


def _forbidden(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MissingScopeError)
    challenge = f'Bearer realm="mailstack", error="insufficient_scope", scope="{exc.scope.value}"'
    return problem(403, "insufficient_scope", str(exc), {"WWW-Authenticate": challenge})


def _rate_limited(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimitExceededError)
    return problem(429, "rate_limited", str(exc), exc.quota.headers())


def _validation_errors(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | intake.InvalidEmailError)
    if isinstance(exc, intake.InvalidEmailError):
        errors = exc.errors
        EMAILS_REJECTED.labels(reason="invalid").inc()
    else:
        # Drop FastAPI's "path"/"query"/"body" prefix so fields read as the API names them.
        errors = [
            FieldError(field=intake.field_path(list(e["loc"])[1:] or e["loc"]), message=e["msg"])
            for e in exc.errors()
        ]
    body = ErrorBody(errors=errors)
    return JSONResponse(status_code=422, content=body.model_dump())


def _payload_too_large(_: Request, exc: Exception) -> JSONResponse:
    EMAILS_REJECTED.labels(reason="too_large").inc()
    return problem(413, "payload_too_large", str(exc))


def _idempotency_key_reused(_: Request, exc: Exception) -> JSONResponse:
    EMAILS_REJECTED.labels(reason="idempotency_key_reused").inc()
    body = ErrorBody(errors=[FieldError(field="Idempotency-Key", message=str(exc))])
    return JSONResponse(status_code=422, content=body.model_dump())


def _idempotency_key_in_flight(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, intake.IdempotencyKeyInFlightError)
    EMAILS_REJECTED.labels(reason="idempotency_key_in_flight").inc()
    return problem(
        409,
        "idempotency_key_in_flight",
        str(exc),
        {"Retry-After": str(exc.retry_after_seconds)},
    )


def _invalid_cursor(_: Request, exc: Exception) -> JSONResponse:
    body = ErrorBody(errors=[FieldError(field="cursor", message=str(exc))])
    return JSONResponse(status_code=422, content=body.model_dump())


def _attachment_storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("attachments.unavailable", path=request.url.path, error=str(exc))
    EMAILS_REJECTED.labels(reason="attachment_storage_unavailable").inc()
    body = Problem(
        error="attachment_storage_unavailable",
        message="the attachments could not be stored; nothing was accepted, retry later",
    )
    return JSONResponse(status_code=503, content=body.model_dump(), headers={"Retry-After": "5"})


def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("database.unavailable", path=request.url.path, error=type(exc).__name__)
    EMAILS_REJECTED.labels(reason="database_unavailable").inc()
    message = "the database is unreachable; retry later"
    return problem(503, "database_unavailable", message, {"Retry-After": "5"})


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _validation_errors)
    app.add_exception_handler(intake.InvalidEmailError, _validation_errors)
    app.add_exception_handler(PayloadTooLargeError, _payload_too_large)
    app.add_exception_handler(InvalidCursorError, _invalid_cursor)
    app.add_exception_handler(intake.IdempotencyKeyReusedError, _idempotency_key_reused)
    app.add_exception_handler(intake.IdempotencyKeyInFlightError, _idempotency_key_in_flight)
    app.add_exception_handler(
        intake.AttachmentStorageUnavailableError, _attachment_storage_unavailable
    )
    app.add_exception_handler(AuthenticationError, _unauthenticated)
    app.add_exception_handler(MissingScopeError, _forbidden)
    app.add_exception_handler(RateLimitExceededError, _rate_limited)
    for error_type in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error_type, _database_unavailable)
