"""HTTP edge of the gateway: parse requests, call the use cases, map results and errors."""

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from mailstack_core.status import EmailStatus
from mailstack_gateway import intake, outbox
from mailstack_gateway.observability import EMAILS_ACCEPTED, EMAILS_REJECTED, REQUEST_SECONDS
from mailstack_gateway.queue import SqsEmailPublisher
from mailstack_gateway.repository import AnyRow, EmailReader, EmailWriter, InvalidCursorError
from mailstack_gateway.schemas import (
    Address,
    EmailAccepted,
    EmailHistory,
    EmailPage,
    EmailPublic,
    EmailSummary,
    ErrorBody,
    FieldError,
    HistoryEntry,
    Links,
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
        max_request_bytes: int,
    ) -> None:
        self.inline = outbox.InlinePublisher(writer, publisher)
        self.writer = writer
        self.primary_reader = primary_reader
        self.replica_reader = replica_reader
        self.publisher = publisher
        self.max_request_bytes = max_request_bytes

    @property
    def reader(self) -> EmailReader:
        return self.replica_reader or self.primary_reader


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

router = APIRouter()


def _links(email_id: uuid.UUID) -> Links:
    return Links(self=f"/v1/emails/{email_id}", history=f"/v1/emails/{email_id}/history")


def _not_found(email_id: uuid.UUID) -> JSONResponse:
    body = Problem(error="not_found", message=f"no email with id {email_id}")
    return JSONResponse(status_code=404, content=body.model_dump())


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
    202: {"model": EmailAccepted, "description": "Accepted: stored durably and queued"},
    413: {"model": Problem, "description": "Request body too large"},
    422: {"model": ErrorBody, "description": "Every validation error, each naming its field"},
    503: {"model": Problem, "description": "Database unavailable; nothing was accepted"},
}


async def submit_email(
    request: Request, response: Response, services: ServicesDep
) -> EmailAccepted:
    raw_body = await _read_body(request, services.max_request_bytes)
    try:
        text = raw_body.decode("utf-8")
        decoded = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise intake.InvalidEmailError(
            [FieldError(field="body", message=f"not valid UTF-8 JSON: {error}")]
        ) from error
    email = intake.parse_email(decoded)
    email_id = await intake.accept_email(email, text, services.writer)
    EMAILS_ACCEPTED.inc()
    # Published off the request path, batched with other new emails: the queue stays out of
    # the request's latency, and the outbox relay publishes whatever this misses.
    services.inline.submit(email_id)
    response.headers["Location"] = f"/v1/emails/{email_id}"
    return EmailAccepted(id=email_id, links=_links(email_id))


for _path, _name in (("/v1/emails", "submit_email"), ("/submitEmail", "submit_email_alias")):
    router.add_api_route(
        _path,
        submit_email,
        methods=["POST"],
        status_code=202,
        response_model=EmailAccepted,
        responses=_SUBMIT_RESPONSES,
        openapi_extra=_SUBMIT_DOC,
        name=_name,
        summary="Accept an email for delivery",
        tags=["emails"],
    )


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
        attempts=row.attempts,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        links=_links(row.id),
    )


@router.get(
    "/v1/emails/{email_id}",
    response_model=EmailPublic,
    response_model_by_alias=True,
    responses={404: {"model": Problem}},
    tags=["emails"],
    summary="An email's current status",
)
async def get_email(email_id: uuid.UUID, services: ServicesDep) -> EmailPublic | JSONResponse:
    row = await services.reader.get(email_id)
    if row is None and services.replica_reader is not None:
        # Read-your-writes: a lagging replica may not have an email accepted a moment ago.
        row = await services.primary_reader.get(email_id)
    return _not_found(email_id) if row is None else _email_public(row)


@router.get(
    "/v1/emails/{email_id}/history",
    response_model=EmailHistory,
    responses={404: {"model": Problem}},
    tags=["emails"],
    summary="An email's append-only history, oldest first",
)
async def get_history(email_id: uuid.UUID, services: ServicesDep) -> EmailHistory | JSONResponse:
    rows = await services.reader.history(email_id)
    if rows is None and services.replica_reader is not None:
        rows = await services.primary_reader.history(email_id)
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
    responses={422: {"model": ErrorBody}},
    tags=["emails"],
    summary="A page of emails, newest first",
)
async def list_emails(
    services: ServicesDep,
    status: EmailStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> EmailPage:
    page = await services.reader.page(status, limit, cursor)
    return EmailPage(
        items=[
            EmailSummary(
                id=row.id,
                status=EmailStatus(row.status),
                subject=row.subject,
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


@router.get("/healthz", tags=["operations"], summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"], summary="The database and the queue are reachable")
async def readyz(services: ServicesDep) -> JSONResponse:
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
    body = Problem(error="payload_too_large", message=str(exc))
    return JSONResponse(status_code=413, content=body.model_dump())


def _invalid_cursor(_: Request, exc: Exception) -> JSONResponse:
    body = ErrorBody(errors=[FieldError(field="cursor", message=str(exc))])
    return JSONResponse(status_code=422, content=body.model_dump())


def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("database.unavailable", path=request.url.path, error=type(exc).__name__)
    EMAILS_REJECTED.labels(reason="database_unavailable").inc()
    body = Problem(error="database_unavailable", message="the database is unreachable; retry later")
    return JSONResponse(status_code=503, content=body.model_dump(), headers={"Retry-After": "5"})


async def _time_requests(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    REQUEST_SECONDS.labels(
        method=request.method,
        route=getattr(route, "path", "unmatched"),
        status=str(response.status_code),
    ).observe(time.perf_counter() - started)
    return response


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _validation_errors)
    app.add_exception_handler(intake.InvalidEmailError, _validation_errors)
    app.add_exception_handler(PayloadTooLargeError, _payload_too_large)
    app.add_exception_handler(InvalidCursorError, _invalid_cursor)
    for error_type in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error_type, _database_unavailable)
    app.middleware("http")(_time_requests)
