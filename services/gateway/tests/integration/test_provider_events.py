"""Provider events and suppressions through the gateway's routes, on the real Postgres:
idempotent, out-of-order tolerant, forward-only, and suppressing in the event's transaction."""

import base64
import json
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from limits.aio.storage import MemoryStorage
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mailstack_core.status import EmailStatus
from mailstack_core.tables import email_history, emails, suppressions, tenants
from mailstack_gateway import api, delivery_api
from mailstack_gateway.auth import AuthenticationError, Principal, Scope, bearer_token
from mailstack_gateway.delivery_store import ProviderEventStore, SuppressionStore
from mailstack_gateway.event_signatures import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridVerifier,
    SharedSecretVerifier,
    load_public_key,
)
from mailstack_gateway.ratelimit import RateLimiter

pytestmark = pytest.mark.integration

TENANT = "acme"
OTHER = "globex"
NOW = 1_780_000_000
SECRET = "ee-shared-secret"
KEY = ec.generate_private_key(ec.SECP256R1())
PRINCIPALS = {
    "acme": Principal(TENANT, frozenset({Scope.SEND, Scope.READ}), "key:acme"),
    "acme-read": Principal(TENANT, frozenset({Scope.READ}), "key:acme-read"),
    "globex": Principal(OTHER, frozenset({Scope.SEND, Scope.READ}), "key:globex"),
}


class TokenAuthenticator:
    async def authenticate(self, authorization: str | None) -> Principal:
        principal = PRINCIPALS.get(bearer_token(authorization))
        if principal is None:
            raise AuthenticationError
        return principal


def _public_key() -> str:
    der = KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.fixture
async def http(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with engine.begin() as connection:
        await connection.execute(insert(tenants).values(id=OTHER))
    app = FastAPI()
    app.state.services = SimpleNamespace(
        authenticator=TokenAuthenticator(),
        rate_limiter=RateLimiter(MemoryStorage(), send_per_minute=1000, read_per_minute=1000),
    )
    app.state.delivery = delivery_api.DeliveryServices(
        events=ProviderEventStore(engine),
        suppressions=SuppressionStore(engine),
        max_request_bytes=1 << 20,
        sendgrid=SendGridVerifier(load_public_key(_public_key()), max_age_seconds=300),
        elasticemail=SharedSecretVerifier(SECRET),
        clock=lambda: NOW,
    )
    api.install(app)
    app.include_router(delivery_api.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        yield client


async def _email(
    engine: AsyncEngine,
    status: EmailStatus = EmailStatus.SENT,
    provider: str = "sendgrid",
    message_id: str | None = None,
) -> uuid.UUID:
    email_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(emails).values(
                id=email_id,
                tenant_id=TENANT,
                sender_email="app@example.com",
                to_recipients=[{"email": "user@example.org"}],
                subject="Hello",
                text_body="Hi",
                status=status,
                request_body="{}",
                provider=provider,
                provider_message_id=message_id or f"msg-{email_id.hex[:12]}",
            )
        )
    return email_id


def _signed(events: list[dict[str, Any]], timestamp: int = NOW) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    signature = KEY.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        TIMESTAMP_HEADER: str(timestamp),
        "content-type": "application/json",
    }
    return body, headers


def _sg(kind: str, event_id: str, email_id: uuid.UUID, **fields: Any) -> dict[str, Any]:
    return {
        "email": "user@example.org",
        "timestamp": NOW,
        "event": kind,
        "sg_event_id": event_id,
        "mailstack_email_id": str(email_id),
        **fields,
    }


async def _post_sendgrid(http: httpx.AsyncClient, events: list[dict[str, Any]]) -> httpx.Response:
    body, headers = _signed(events)
    return await http.post("/v1/provider-events/sendgrid", content=body, headers=headers)


async def _state(engine: AsyncEngine, email_id: uuid.UUID) -> tuple[str, list[str]]:
    async with engine.connect() as connection:
        status = await connection.scalar(select(emails.c.status).where(emails.c.id == email_id))
        rows = await connection.execute(
            select(email_history.c.status)
            .where(email_history.c.email_id == email_id)
            .order_by(email_history.c.id)
        )
        return str(status), [row.status for row in rows]


async def _suppressed(engine: AsyncEngine, tenant: str = TENANT) -> dict[str, str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(suppressions.c.email, suppressions.c.reason).where(
                suppressions.c.tenant_id == tenant
            )
        )
        return {row.email: row.reason for row in rows}


def _metric(result: str, provider: str = "sendgrid") -> float:
    value = REGISTRY.get_sample_value(
        "mailstack_gateway_provider_events_total", {"provider": provider, "result": result}
    )
    return value or 0.0


async def test_a_delivery_found_by_the_message_id_moves_sent_to_delivered_once(
    engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    email_id = await _email(engine, message_id="xmsg-1")
    event = _sg("delivered", "ev-1", email_id, sg_message_id="xmsg-1.filterdrecv-1.0")
    del event["mailstack_email_id"]  # found by the provider's message id alone

    first = await _post_sendgrid(http, [event])
    again = await _post_sendgrid(http, [event])

    assert first.status_code == again.status_code == 200
    assert first.json()["recorded"] == 1
    assert again.json() == {**again.json(), "recorded": 0, "duplicates": 1}
    assert await _state(engine, email_id) == ("DELIVERED", ["DELIVERED"])
    async with engine.connect() as connection:
        row = (await connection.execute(select(email_history))).one()
    assert (row.provider, row.provider_event_id) == ("sendgrid", "ev-1")
    assert row.detail["raw"]["sg_message_id"] == "xmsg-1.filterdrecv-1.0"


async def test_events_out_of_order_never_move_the_status_back(
    engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    email_id = await _email(engine)
    await _post_sendgrid(http, [_sg("open", "ev-open", email_id)])
    await _post_sendgrid(
        http, [_sg("delivered", "ev-del", email_id), _sg("deferred", "ev-def", email_id)]
    )
    assert await _state(engine, email_id) == ("OPENED", ["OPENED", "DELIVERED", "DEFERRED"])

    await _post_sendgrid(http, [_sg("bounce", "ev-b", email_id, type="bounce")])
    await _post_sendgrid(http, [_sg("spamreport", "ev-s", email_id), _sg("click", "c", email_id)])

    status, rows = await _state(engine, email_id)
    assert status == "BOUNCED"
    assert rows[-3:] == ["BOUNCED", "COMPLAINED", "CLICKED"]


async def test_a_hard_bounce_suppresses_the_recipient_and_a_soft_one_does_not(
    engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    soft, hard = await _email(engine), await _email(engine)
    await _post_sendgrid(
        http,
        [
            _sg("bounce", "ev-soft", soft, type="blocked", email="soft@example.org"),
            _sg("bounce", "ev-hard", hard, type="bounce", email="Hard@Example.org"),
        ],
    )
    assert await _suppressed(engine) == {"hard@example.org": "hard_bounce"}
    assert await _suppressed(engine, OTHER) == {}
    async with engine.connect() as connection:
        detail = await connection.scalar(
            select(email_history.c.detail).where(email_history.c.email_id == soft)
        )
    assert (detail["bounce"], detail["recipient"]) == ("soft", "soft@example.org")


async def test_a_tampered_batch_is_refused_and_nothing_is_stored(
    engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    email_id = await _email(engine)
    body, headers = _signed([_sg("delivered", "ev-1", email_id)])
    tampered = body.replace(b"delivered", b"spamreport")

    refused = await http.post("/v1/provider-events/sendgrid", content=tampered, headers=headers)
    stale_body, stale = _signed([_sg("delivered", "ev-1", email_id)], timestamp=NOW - 301)
    late = await http.post("/v1/provider-events/sendgrid", content=stale_body, headers=stale)

    assert refused.status_code == late.status_code == 401
    assert await _state(engine, email_id) == ("SENT", [])
    assert await _suppressed(engine) == {}


async def test_an_unknown_message_id_is_accepted_and_counted(
    engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    before = _metric("unknown_email")
    event = _sg("delivered", "ev-x", uuid.uuid4(), sg_message_id="nobody.filter1")

    response = await _post_sendgrid(http, [event])

    assert response.status_code == 200
    assert response.json()["unknown_emails"] == 1
    assert _metric("unknown_email") == before + 1
    async with engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(email_history)) == 0


async def test_a_batch_is_one_transaction(engine: AsyncEngine, http: httpx.AsyncClient) -> None:
    email_id = await _email(engine)
    # The second event's detail cannot be stored (a NUL character): the first is not kept.
    events = [_sg("delivered", "ev-1", email_id), _sg("open", "ev-2", email_id, note="\u0000")]

    with pytest.raises(Exception, match="0000"):
        await _post_sendgrid(http, events)

    assert await _state(engine, email_id) == ("SENT", [])


async def test_elasticemail_notifications_need_the_secret_and_count_once(
    engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    email_id = await _email(engine, provider="elasticemail")
    postback = json.dumps({"mailstack_email_id": str(email_id), "tags": [], "metadata": {}})
    params = {
        "status": "Error",
        "category": "NoMailbox",
        "to": "user@example.org",
        "messageid": "ee-1",
        "postback": postback,
        "date": "12/2/2026 00:00:01",
    }
    path = "/v1/provider-events/elasticemail"

    wrong = await http.get(path, params={**params, "secret": "guess"})
    missing = await http.post(path, params=params)
    assert wrong.status_code == missing.status_code == 401
    assert await _state(engine, email_id) == ("SENT", [])

    first = await http.get(path, params={**params, "secret": SECRET})
    again = await http.post(path, params={"secret": SECRET}, data=params)

    assert (first.json()["recorded"], again.json()["duplicates"]) == (1, 1)
    assert await _state(engine, email_id) == ("BOUNCED", ["BOUNCED"])
    assert await _suppressed(engine) == {"user@example.org": "hard_bounce"}


async def test_the_suppression_list_is_each_tenants_own_and_pages_newest_first(
    http: httpx.AsyncClient,
) -> None:
    acme = {"Authorization": "Bearer acme"}
    for n in range(3):
        created = await http.post(
            "/v1/suppressions", json={"email": f"U{n}@Example.org"}, headers=acme
        )
        assert created.status_code == 201
        assert created.json()["email"] == f"u{n}@example.org"
    repeated = await http.post(
        "/v1/suppressions", json={"email": "u0@example.org", "reason": "complaint"}, headers=acme
    )
    assert (repeated.status_code, repeated.json()["reason"]) == (200, "manual")

    first = (await http.get("/v1/suppressions?limit=2", headers=acme)).json()
    rest = (
        await http.get(f"/v1/suppressions?limit=2&cursor={first['next_cursor']}", headers=acme)
    ).json()
    listed = [item["email"] for item in first["items"] + rest["items"]]
    assert listed == ["u2@example.org", "u1@example.org", "u0@example.org"]
    assert rest["next_cursor"] is None

    globex = {"Authorization": "Bearer globex"}
    assert (await http.get("/v1/suppressions", headers=globex)).json()["items"] == []
    assert (await http.delete("/v1/suppressions/u1@example.org", headers=globex)).status_code == 404

    read_only = {"Authorization": "Bearer acme-read"}
    refused = await http.delete("/v1/suppressions/u1@example.org", headers=read_only)
    assert refused.status_code == 403
    assert (await http.delete("/v1/suppressions/U1@example.org", headers=acme)).status_code == 204
    remaining = (await http.get("/v1/suppressions", headers=acme)).json()["items"]
    assert [item["email"] for item in remaining] == ["u2@example.org", "u0@example.org"]
    assert (await http.get("/v1/suppressions")).status_code == 401
    bad = await http.get("/v1/suppressions?cursor=nope", headers=acme)
    assert bad.status_code == 422
    forged = base64.urlsafe_b64encode(b"2026-01-01T00:00:00|a\x00b").decode()
    assert (await http.get(f"/v1/suppressions?cursor={forged}", headers=acme)).status_code == 422
