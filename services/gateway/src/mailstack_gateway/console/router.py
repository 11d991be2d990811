"""The console's routes: sign-in and sign-out, the tenant's emails, one email's timeline, the
providers' health. Server-rendered HTML and plain forms; no script anywhere.

A page needs a live session (sessions.py), else it redirects to the sign-in form. Every POST
carries a CSRF token checked here: the session's for sign-out, and for sign-in (no session yet)
a token the sign-in form's GET set in a cookie of its own and in the form (double submit), so
another site cannot sign a browser into its own key either.
"""

import hmac
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from mailstack_core.status import EmailStatus
from mailstack_gateway.api import Services, ServicesDep
from mailstack_gateway.auth import AuthenticationError, MissingScopeError, Scope
from mailstack_gateway.console import views
from mailstack_gateway.console.queries import ConsoleQueries
from mailstack_gateway.console.sessions import ConsoleSession, SessionStore, new_token
from mailstack_gateway.repository import EmailReader, InvalidCursorError
from mailstack_gateway.schemas import TAG_PATTERN

log = structlog.get_logger(__name__)

PREFIX = "/console"
SESSION_COOKIE = "mailstack_console"
SIGN_IN_CSRF_COOKIE = "mailstack_console_sign_in"
# Only the console's own stylesheet; no script, frame, plugin or foreign form target at all.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_SIZE = 50
_HERE = Path(__file__).resolve().parent

templates = Jinja2Templates(directory=_HERE / "templates")


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _minute(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%H:%M")


def _css_word(value: str | None) -> str:
    """A status or state as a CSS class suffix (`status-sent`, `state-half-open`)."""
    return re.sub(r"[^a-z0-9]+", "-", (value or "none").lower()).strip("-") or "none"


templates.env.filters.update(when=_when, minute=_minute, css_word=_css_word)


@dataclass(frozen=True)
class ConsoleConfig:
    session_lifetime: timedelta
    # Whether cookies are Secure; None: when the request came over HTTPS (or says it did,
    # through a proxy's X-Forwarded-Proto).
    secure_cookies: bool | None = None


class Console:
    """What the console's routes need, built once by main.create_app."""

    def __init__(self, sessions: SessionStore, queries: ConsoleQueries, config: ConsoleConfig):
        self.sessions = sessions
        self.queries = queries
        self.config = config


def get_console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


ConsoleDep = Annotated[Console, Depends(get_console)]


class SignInRequiredError(Exception):
    """No live session: the browser is sent to the sign-in form."""


class CsrfRejectedError(Exception):
    """A POST without the CSRF token it needs."""


async def current_session(request: Request, console: ConsoleDep) -> ConsoleSession:
    session_id = request.cookies.get(SESSION_COOKIE)
    session = await console.sessions.find(session_id) if session_id else None
    if session is None:
        raise SignInRequiredError
    return session


SessionDep = Annotated[ConsoleSession, Depends(current_session)]


def _same_token(expected: str | None, presented: str) -> bool:
    return bool(expected) and bool(presented) and hmac.compare_digest(expected or "", presented)


def _secure(request: Request, console: Console) -> bool:
    if console.config.secure_cookies is not None:
        return console.config.secure_cookies
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _set_cookie(
    response: Response, request: Request, console: Console, name: str, value: str, seconds: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=seconds,
        path=PREFIX,
        secure=_secure(request, console),
        httponly=True,
        samesite="strict",
    )


def _page(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def _redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("")
async def console_home() -> RedirectResponse:
    return _redirect(f"{PREFIX}/emails")


def _sign_in_form(
    request: Request, console: Console, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    token = new_token()
    response = _page(
        request,
        "sign_in.html",
        {"title": "Sign in", "csrf_token": token, "error": error},
        status_code,
    )
    _set_cookie(response, request, console, SIGN_IN_CSRF_COOKIE, token, 3600)
    return response


@router.get("/sign-in")
async def sign_in_form(request: Request, console: ConsoleDep) -> Response:
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id and await console.sessions.find(session_id) is not None:
        return _redirect(f"{PREFIX}/emails")
    return _sign_in_form(request, console)


@router.post("/sign-in")
async def sign_in(
    request: Request,
    console: ConsoleDep,
    services: ServicesDep,
    api_key: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    if not _same_token(request.cookies.get(SIGN_IN_CSRF_COOKIE), csrf_token):
        raise CsrfRejectedError
    try:
        principal = await services.authenticator.api_keys.authenticate(api_key.strip())
        principal.require(Scope.READ)
    except AuthenticationError:
        return _sign_in_form(request, console, "That API key is not valid.", 400)
    except MissingScopeError:
        return _sign_in_form(
            request, console, f"That API key lacks the {Scope.READ.value} scope.", 403
        )
    key_id = principal.credential_id.removeprefix("key:")
    if previous := request.cookies.get(SESSION_COOKIE):
        await console.sessions.close(previous)  # signing in again replaces the session
    opened = await console.sessions.open(
        key_id, principal.tenant_id, console.config.session_lifetime
    )
    log.info("console.signed_in", tenant=principal.tenant_id, key_id=key_id)
    response = _redirect(f"{PREFIX}/emails")
    seconds = int(console.config.session_lifetime.total_seconds())
    _set_cookie(response, request, console, SESSION_COOKIE, opened.session_id, seconds)
    response.delete_cookie(SIGN_IN_CSRF_COOKIE, path=PREFIX)
    return response


@router.post("/sign-out")
async def sign_out(
    request: Request,
    console: ConsoleDep,
    session: SessionDep,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    if not _same_token(session.csrf_token, csrf_token):
        raise CsrfRejectedError
    await console.sessions.close(request.cookies[SESSION_COOKIE])
    log.info("console.signed_out", tenant=session.tenant_id, key_id=session.key_id)
    response = _redirect(f"{PREFIX}/sign-in")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


def _status_filter(value: str) -> EmailStatus | None:
    return EmailStatus(value) if value in EmailStatus.__members__.values() else None


@router.get("/emails")
async def email_list(
    request: Request,
    console: ConsoleDep,
    services: ServicesDep,
    session: SessionDep,
    status: str = "",
    tag: str = "",
    cursor: str = "",
) -> HTMLResponse:
    errors = []
    status_filter = _status_filter(status)
    if status and status_filter is None:
        errors.append(f"There is no status {status!r}.")
    tag_filter = tag.strip() or None
    if tag_filter is not None and not re.match(TAG_PATTERN, tag_filter):
        errors.append("A tag has 1 to 64 letters, digits, '-' or '_'.")
        tag_filter = None
    try:
        page = await services.reader.page(
            session.tenant_id, status_filter, PAGE_SIZE, cursor or None, tag_filter
        )
    except InvalidCursorError:
        errors.append("That page link is not valid; this is the first page.")
        page = await services.reader.page(
            session.tenant_id, status_filter, PAGE_SIZE, None, tag_filter
        )
    now = datetime.now(UTC)
    counts = await console.queries.activity(session.tenant_id, now)
    filters = {"status": status_filter.value if status_filter else "", "tag": tag_filter or ""}
    return _page(
        request,
        "emails.html",
        {
            "title": "Emails",
            "nav": "emails",
            "session": session,
            "emails": page.rows,
            "next_cursor": page.next_cursor,
            "paged": bool(cursor),
            "filters": filters,
            "statuses": list(EmailStatus),
            "errors": errors,
            "chart": views.sends_chart(counts, now),
        },
    )


T = TypeVar("T")


async def _read(
    services: Services, query: Callable[[EmailReader], Awaitable[T | None]]
) -> T | None:
    """From the replica, else from the primary when the replica has nothing yet."""
    found = await query(services.reader)
    if found is None and services.replica_reader is not None:
        found = await query(services.primary_reader)
    return found


@router.get("/emails/{email_id}")
async def email_page(
    request: Request, services: ServicesDep, session: SessionDep, email_id: str
) -> HTMLResponse:
    try:
        parsed = uuid.UUID(email_id)
    except ValueError:
        parsed = None
    row = None
    history = None
    if parsed is not None:
        # Another tenant's email is not found, as in the API.
        row = await _read(services, lambda reader: reader.get(session.tenant_id, parsed))
        history = await _read(services, lambda reader: reader.history(session.tenant_id, parsed))
    if row is None:
        return _page(
            request,
            "not_found.html",
            {"title": "Not found", "session": session, "email_id": email_id},
            404,
        )
    return _page(
        request,
        "email.html",
        {
            "title": row.subject,
            "nav": "emails",
            "session": session,
            "email": row,
            "timeline": views.timeline(history or []),
        },
    )


@router.get("/providers")
async def providers_page(
    request: Request, console: ConsoleDep, session: SessionDep
) -> HTMLResponse:
    now = datetime.now(UTC)
    counts = await console.queries.activity(session.tenant_id, now)
    breakers = await console.queries.breakers()
    return _page(
        request,
        "providers.html",
        {
            "title": "Providers",
            "nav": "providers",
            "session": session,
            "providers": views.provider_health(breakers, counts, now),
            "chart": views.sends_chart(counts, now),
            "now": now,
        },
    )


def _to_sign_in(request: Request, _: Exception) -> Response:
    response = _redirect(f"{PREFIX}/sign-in")
    if SESSION_COOKIE in request.cookies:
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


def _csrf_rejected(request: Request, _: Exception) -> Response:
    log.warning("console.csrf_rejected", path=request.url.path)
    return _page(request, "forbidden.html", {"title": "Refused"}, 403)


def install(app: FastAPI, console: Console) -> None:
    app.state.console = console
    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=_HERE / "static"), name="console-static")
    app.add_exception_handler(SignInRequiredError, _to_sign_in)
    app.add_exception_handler(CsrfRejectedError, _csrf_rejected)
