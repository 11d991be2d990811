"""The web console in process, on the real Postgres: sessions, CSRF, cookie flags, tenant
isolation, revocation, the timeline, the breakers and the sends-per-minute aggregate."""

import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine, create_engine, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core.database import normalize_database_url
from mailstack_core.tables import console_sessions, email_history, emails, provider_breakers
from mailstack_gateway.auth import Scope
from mailstack_gateway.console import router as console_router
from mailstack_gateway.console.queries import ConsoleQueries, MinuteCount, window_start
from mailstack_gateway.console.router import CONTENT_SECURITY_POLICY, SESSION_COOKIE
from mailstack_gateway.intake import parse_email
from mailstack_gateway.keys import KeyAdmin
from mailstack_gateway.main import create_app
from mailstack_gateway.repository import EmailWriter
from mailstack_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

TENANT = "acme"
OTHER = "globex"
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens: these tests publish nothing
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def admin(database_url: str) -> Iterator[KeyAdmin]:
    engine: Engine = create_engine(normalize_database_url(database_url))
    admin = KeyAdmin(engine)
    admin.ensure_tenant(OTHER)  # TENANT: the `engine` fixture creates it
    yield admin
    engine.dispose()


@pytest.fixture
async def console(database_url: str, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(
        database_url=database_url,
        email_queue_url=f"{UNREACHABLE}/000000000000/emails",
        attachments_bucket="mailstack-attachments",
        aws_endpoint_url=UNREACHABLE,
        auth_cache_seconds=0,
        outbox_grace_seconds=3600,
    )
    app = create_app(settings, run_relay=False)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway") as client,
    ):
        yield client


def _key(admin: KeyAdmin, tenant: str = TENANT, *scopes: Scope) -> tuple[str, str]:
    key_id, new = admin.create_key(tenant, "console", scopes or (Scope.READ,))
    return key_id, new.token


def _cookie_header(cookies: httpx.Cookies) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def _csrf(page: httpx.Response) -> str:
    match = CSRF_FIELD.search(page.text)
    assert match, page.text
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, api_key: str) -> httpx.Response:
    form = await client.get("/console/sign-in")
    assert form.status_code == 200, form.text
    return await client.post(
        "/console/sign-in", data={"api_key": api_key, "csrf_token": _csrf(form)}
    )


async def signed_in(client: httpx.AsyncClient, api_key: str) -> None:
    response = await sign_in(client, api_key)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console/emails"


async def _email(writer: EmailWriter, tenant: str, subject: str) -> uuid.UUID:
    email_id = uuid.uuid4()
    request = {
        "from": {"email": "app@example.com"},
        "to": [{"email": "user@example.com"}],
        "subject": subject,
        "text": "Hi",
    }
    await writer.save_queued(tenant, email_id, parse_email(request), "{}")
    return email_id


async def _history(
    engine: AsyncEngine,
    email_id: uuid.UUID,
    *steps: tuple[str, str | None, dict[str, str]],
    at: datetime | None = None,
) -> None:
    async with engine.begin() as connection:
        for status, provider, detail in steps:
            values = {"email_id": email_id, "status": status, "provider": provider}
            await connection.execute(
                insert(email_history).values(
                    **values, detail=detail, **({"at": at} if at is not None else {})
                )
            )
            await connection.execute(
                update(emails)
                .where(emails.c.id == email_id)
                .values(status=status, provider=provider)
            )


async def test_signing_in_opens_a_server_side_session_in_a_strict_http_only_cookie(
    console: httpx.AsyncClient, admin: KeyAdmin, engine: AsyncEngine
) -> None:
    assert (await console.get("/console/emails")).headers["location"] == "/console/sign-in"
    _, token = _key(admin)

    response = await sign_in(console, token)

    assert response.status_code == 303
    cookie = next(
        value
        for name, value in response.headers.multi_items()
        if name == "set-cookie" and value.startswith(f"{SESSION_COOKIE}=")
    )
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/console"} <= flags
    assert "secure" not in flags  # plain http here; see the next test
    session_id = cookie.split(";")[0].split("=", 1)[1]
    async with engine.connect() as connection:
        stored = (await connection.execute(select(console_sessions))).one()
    # The table has the id's digest, never the id (a read of it opens no session).
    assert bytes(stored.id_sha256) == hashlib.sha256(session_id.encode()).digest()
    assert session_id not in repr(tuple(stored))
    assert stored.tenant_id == TENANT
    assert timedelta(hours=7) < stored.expires_at - stored.created_at <= timedelta(hours=8)

    page = await console.get("/console/emails")
    assert page.status_code == 200
    assert f'data-testid="tenant">{TENANT}<' in page.text

    # Signing in again (a sign-in form left open in another tab) replaces the session.
    form = await console.get("/console/sign-in", headers={"Cookie": "none=1"})
    again = await console.post(
        "/console/sign-in",
        data={"api_key": token, "csrf_token": _csrf(form)},
        headers={"Cookie": f"{_cookie_header(form.cookies)}; {SESSION_COOKIE}={session_id}"},
    )
    assert again.status_code == 303
    async with engine.connect() as connection:
        rows = (await connection.execute(select(console_sessions.c.id_sha256))).all()
    assert [bytes(row.id_sha256) for row in rows] != [bytes(stored.id_sha256)]
    assert len(rows) == 1


async def test_cookies_are_secure_when_the_request_came_over_https(
    console: httpx.AsyncClient, admin: KeyAdmin
) -> None:
    _, token = _key(admin)
    form = await console.get("/console/sign-in", headers={"X-Forwarded-Proto": "https"})
    assert "secure" in form.headers["set-cookie"].lower()
    response = await console.post(
        "/console/sign-in",
        data={"api_key": token, "csrf_token": _csrf(form)},
        # The client keeps a Secure cookie for https only: hand it over for this one POST.
        headers={"X-Forwarded-Proto": "https", "Cookie": _cookie_header(form.cookies)},
    )
    assert response.status_code == 303
    session_cookie = [c for c in response.headers.get_list("set-cookie") if SESSION_COOKIE in c]
    assert "; secure" in session_cookie[0].lower()


async def test_a_wrong_key_or_one_without_the_read_scope_opens_no_session(
    console: httpx.AsyncClient, admin: KeyAdmin, engine: AsyncEngine
) -> None:
    _, send_only = _key(admin, TENANT, Scope.SEND)
    wrong = await sign_in(console, f"ms_{'0' * 16}_{'A' * 43}")
    garbage = await sign_in(console, "not a key")
    no_read = await sign_in(console, send_only)

    assert (wrong.status_code, garbage.status_code, no_read.status_code) == (400, 400, 403)
    assert "That API key is not valid." in wrong.text
    assert "That API key is not valid." in garbage.text
    assert "lacks the emails:read scope" in no_read.text
    async with engine.connect() as connection:
        assert (await connection.execute(select(console_sessions))).first() is None
    assert (await console.get("/console/emails")).status_code == 303


async def test_every_post_needs_its_csrf_token(console: httpx.AsyncClient, admin: KeyAdmin) -> None:
    _, token = _key(admin)
    form = await console.get("/console/sign-in")
    missing = await console.post("/console/sign-in", data={"api_key": token})
    other = await console.post(
        "/console/sign-in", data={"api_key": token, "csrf_token": "x" * len(_csrf(form))}
    )
    without_cookie = await console.post(
        "/console/sign-in",
        data={"api_key": token, "csrf_token": _csrf(form)},
        headers={"Cookie": "unrelated=1"},
    )
    assert [r.status_code for r in (missing, other, without_cookie)] == [403, 403, 403]
    assert SESSION_COOKIE not in console.cookies

    await signed_in(console, token)
    refused = await console.post("/console/sign-out")
    forged = await console.post("/console/sign-out", data={"csrf_token": _csrf(form)})
    assert (refused.status_code, forged.status_code) == (403, 403)
    assert (await console.get("/console/emails")).status_code == 200  # still signed in

    page = await console.get("/console/emails")
    signed_out = await console.post("/console/sign-out", data={"csrf_token": _csrf(page)})
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/console/sign-in")
    assert (await console.get("/console/emails")).status_code == 303


async def test_signing_out_ends_the_session_even_for_a_copy_of_its_cookie(
    console: httpx.AsyncClient, admin: KeyAdmin, engine: AsyncEngine
) -> None:
    _, token = _key(admin)
    await signed_in(console, token)
    stolen = console.cookies[SESSION_COOKIE]
    page = await console.get("/console/emails")
    await console.post("/console/sign-out", data={"csrf_token": _csrf(page)})

    replayed = await console.get(
        "/console/emails", headers={"Cookie": f"{SESSION_COOKIE}={stolen}"}
    )
    assert replayed.status_code == 303
    async with engine.connect() as connection:
        assert (await connection.execute(select(console_sessions))).first() is None


async def test_revoking_or_expiring_the_key_ends_its_sessions_at_once(
    console: httpx.AsyncClient, admin: KeyAdmin, engine: AsyncEngine
) -> None:
    key_id, token = _key(admin)
    await signed_in(console, token)
    assert (await console.get("/console/providers")).status_code == 200

    admin.revoke_key(key_id)
    ended = await console.get("/console/providers")
    assert (ended.status_code, ended.headers["location"]) == (303, "/console/sign-in")

    other_id, other = _key(admin)
    await signed_in(console, other)
    async with engine.begin() as connection:
        await connection.execute(
            update(console_sessions)
            .where(console_sessions.c.key_id == other_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert (await console.get("/console/emails")).status_code == 303


async def test_a_session_sees_only_its_own_tenants_emails(
    console: httpx.AsyncClient, admin: KeyAdmin, writer: EmailWriter, engine: AsyncEngine
) -> None:
    mine = await _email(writer, TENANT, "Acme receipt")
    theirs = await _email(writer, OTHER, "Globex secret")
    sent_at = datetime.now(UTC)
    await _history(engine, theirs, ("SENT", "sendgrid", {}), at=sent_at)
    _, token = _key(admin)
    await signed_in(console, token)

    listed = await console.get("/console/emails")
    assert "Acme receipt" in listed.text
    assert "Globex secret" not in listed.text
    assert str(theirs) not in listed.text
    assert 'data-testid="chart-sent">0<' in listed.text  # globex's send is not counted
    assert (await console.get(f"/console/emails/{mine}")).status_code == 200
    other = await console.get(f"/console/emails/{theirs}")
    assert other.status_code == 404
    assert "Globex secret" not in other.text
    assert (await console.get("/console/emails/not-a-uuid")).status_code == 404
    providers = await console.get("/console/providers")
    assert 'data-provider="sendgrid"' not in providers.text  # nor its provider counts


async def test_the_list_filters_by_status_and_tag_and_pages_with_the_api_cursor(
    console: httpx.AsyncClient,
    admin: KeyAdmin,
    writer: EmailWriter,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = [await _email(writer, TENANT, f"Email {n}") for n in range(3)]
    async with engine.begin() as connection:
        await connection.execute(update(emails).where(emails.c.id == ids[0]).values(tags=["vip"]))
    await _history(engine, ids[1], ("PROCESSING", None, {}), ("SENT", "elasticemail", {}))
    _, token = _key(admin)
    await signed_in(console, token)

    sent = await console.get("/console/emails", params={"status": "SENT"})
    assert ("Email 1" in sent.text, "Email 0" in sent.text) == (True, False)
    tagged = await console.get("/console/emails", params={"tag": "vip"})
    assert ("Email 0" in tagged.text, "Email 1" in tagged.text) == (True, False)
    bad = await console.get("/console/emails", params={"status": "LOST", "tag": "no spaces"})
    assert bad.status_code == 200
    assert "There is no status" in bad.text
    assert "A tag has" in bad.text

    monkeypatch.setattr(console_router, "PAGE_SIZE", 2)
    first = await console.get("/console/emails")
    cursor = re.search(r'rel="next" href="[^"]*cursor=([^"&]+)"', first.text)
    assert cursor, first.text
    second = await console.get(f"/console/emails?cursor={cursor.group(1)}")
    shown = [n for n in range(3) if f"Email {n}<" in first.text]
    rest = [n for n in range(3) if f"Email {n}<" in second.text]
    assert sorted(shown + rest) == [0, 1, 2]
    assert len(shown) == 2
    broken = await console.get("/console/emails?cursor=garbage")
    assert broken.status_code == 200
    assert "not valid" in broken.text


async def test_an_emails_page_shows_its_timeline_with_the_failover(
    console: httpx.AsyncClient, admin: KeyAdmin, writer: EmailWriter, engine: AsyncEngine
) -> None:
    email_id = await _email(writer, TENANT, "Your <receipt>")
    await _history(
        engine,
        email_id,
        ("PROCESSING", None, {}),
        ("FAILED", "elasticemail", {"outcome": "failed", "reason": "HTTP 503"}),
        ("SENT", "sendgrid", {"outcome": "sent"}),
    )
    _, token = _key(admin)
    await signed_in(console, token)

    page = await console.get(f"/console/emails/{email_id}")

    assert page.status_code == 200
    assert "Your &lt;receipt&gt;" in page.text  # escaped, never markup
    entries = re.findall(r'<li class="entry at-([a-z-]+)">', page.text)
    assert entries == ["queued", "processing", "failed", "sent"]
    assert page.text.count("failover from elasticemail") == 1
    assert "HTTP 503" in page.text


async def test_console_pages_carry_a_policy_without_scripts_and_refuse_framing(
    console: httpx.AsyncClient, admin: KeyAdmin
) -> None:
    _, token = _key(admin)
    sign_in_form = await console.get("/console/sign-in")
    await signed_in(console, token)
    for response in (
        sign_in_form,
        await console.get("/console/emails"),
        await console.get("/console/providers"),
    ):
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers.get_list("content-security-policy") == [CONTENT_SECURITY_POLICY]
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert "<script" not in response.text
        assert " style=" not in response.text
    assert "script-src" not in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    css = await console.get("/console/static/console.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    # The API keeps its own policy.
    api = await console.get("/healthz")
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


async def test_the_providers_page_shows_each_breakers_state(
    console: httpx.AsyncClient, admin: KeyAdmin, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(
            insert(provider_breakers),
            [
                {
                    "provider": "elasticemail",
                    "consecutive_failures": 4,
                    "opened_until": now + timedelta(minutes=5),
                    "last_error": "HTTP 503 from ElasticEmail",
                },
                {
                    "provider": "sendgrid",
                    "consecutive_failures": 3,
                    "opened_until": now - timedelta(seconds=1),
                    "last_error": None,
                },
                {
                    "provider": "postmark",
                    "consecutive_failures": 1,
                    "opened_until": None,
                    "last_error": None,
                },
                {
                    "provider": "mailgun",
                    "consecutive_failures": 0,
                    "opened_until": None,
                    "last_error": None,
                },
            ],
        )
    _, token = _key(admin)
    await signed_in(console, token)

    page = await console.get("/console/providers")

    states = dict(
        re.findall(
            r'data-provider="([a-z]+)">\s*<td>[a-z]+</td>\s*<td><span[^>]*>([a-z-]+)<', page.text
        )
    )
    assert states == {
        "elasticemail": "open",
        "sendgrid": "half-open",
        "postmark": "failing",
        "mailgun": "closed",
    }
    assert "HTTP 503 from ElasticEmail" in page.text


async def test_the_sends_aggregate_counts_the_tenants_last_hour_per_minute_and_provider(
    admin: KeyAdmin, writer: EmailWriter, engine: AsyncEngine
) -> None:
    now = datetime(2026, 12, 2, 10, 30, 20, tzinfo=UTC)
    start = window_start(now)
    assert start == datetime(2026, 12, 2, 9, 31, tzinfo=UTC)
    first, second, old, theirs = [
        await _email(writer, tenant, "s") for tenant in (TENANT, TENANT, TENANT, OTHER)
    ]
    await _history(engine, first, ("SENT", "elasticemail", {}), at=now - timedelta(seconds=5))
    await _history(
        engine,
        second,
        ("PROCESSING", None, {}),
        ("FAILED", "elasticemail", {}),
        ("SENT", "sendgrid", {}),
        at=now.replace(second=10),
    )
    await _history(engine, old, ("SENT", "sendgrid", {}), at=start - timedelta(seconds=1))
    await _history(engine, theirs, ("SENT", "sendgrid", {}), at=now)
    await _history(engine, first, ("SENT", "sendgrid", {}), at=start)

    counts = await ConsoleQueries(engine).activity(TENANT, now)

    current = now.replace(second=0)
    assert sorted(counts, key=lambda c: (c.minute, c.provider or "")) == [
        MinuteCount(start, "sendgrid", 1, 0),
        MinuteCount(current, "elasticemail", 1, 1),
        MinuteCount(current, "sendgrid", 1, 0),
    ]
