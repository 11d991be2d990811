"""An unhandled error of the gateway reaches Sentry: the app on the real Postgres and LocalStack,
its SENTRY_DSN pointed at a real HTTP server standing in for Sentry."""

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sentry_sdk
from sqlalchemy import create_engine

from mailstack_core.database import normalize_database_url
from mailstack_core.telemetry import TelemetrySettings, configure_telemetry
from mailstack_gateway.auth import ALL_SCOPES
from mailstack_gateway.keys import KeyAdmin
from mailstack_gateway.main import SERVICE_NAME, create_app, sentry_integrations
from mailstack_gateway.settings import GatewaySettings
from mailstack_testing.recording import RecordingServer, sentry_events
from mailstack_testing.waiting import eventually

pytestmark = pytest.mark.integration

PROJECT = "42"
LEAKED_KEY = f"ms_{'1' * 16}_{'S' * 43}"


@pytest.fixture
def sentry() -> Iterator[RecordingServer]:
    with RecordingServer(b"{}") as server:
        yield server
    sentry_sdk.init()  # no DSN: later tests report nothing


def _admin_key(database_url: str) -> str:
    engine = create_engine(normalize_database_url(database_url))
    try:
        admin = KeyAdmin(engine)
        admin.ensure_tenant("acme")
        return admin.create_key("acme", "error reports", ALL_SCOPES)[1].token
    finally:
        engine.dispose()


async def test_an_unhandled_error_is_reported_scrubbed_with_the_email_id_as_a_tag(
    database_url: str, localstack_endpoint: str, sqs_queues: Any, sentry: RecordingServer
) -> None:
    host_and_port = sentry.url.removeprefix("http://")
    dsn = f"http://publickey@{host_and_port}/{PROJECT}"
    settings = GatewaySettings(
        database_url=database_url,
        email_queue_url=sqs_queues.email_queue_url,
        attachments_bucket=sqs_queues.attachments_bucket,
        aws_endpoint_url=localstack_endpoint,
        sentry_dsn=dsn,
    )
    telemetry = configure_telemetry(
        TelemetrySettings(sentry_dsn=dsn), SERVICE_NAME, sentry_integrations=sentry_integrations()
    )
    assert telemetry.reports_errors
    app = create_app(settings, run_relay=False)

    async def broken_lookup(*_: Any) -> None:
        raise RuntimeError(f"lookup failed with {LEAKED_KEY} on postgresql://app:hunter2@db/x")

    app.state.services.primary_reader.get = broken_lookup
    key = _admin_key(database_url)
    email_id = uuid.uuid4()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport,
            base_url="http://gateway",
            headers={"Authorization": f"Bearer {key}"},
        ) as client,
    ):
        response = await client.get(f"/v1/emails/{email_id}")
    assert response.status_code == 500
    sentry_sdk.flush(timeout=5)

    events = eventually(lambda: sentry_events(sentry), 10, what="an event at the Sentry DSN")

    [event] = events
    [error] = event["exception"]["values"]
    assert error["type"] == "RuntimeError"
    assert "[redacted]" in error["value"]
    assert event["tags"]["email_id"] == str(email_id)
    assert event["tags"]["tenant"] == "acme"
    assert event["request"]["url"].endswith(f"/v1/emails/{email_id}")
    assert event["server_name"] == SERVICE_NAME
    envelope = b"".join(request.body for request in sentry.requests_to("/api/"))
    for secret in (LEAKED_KEY.encode(), b"hunter2", key.encode()):
        assert secret not in envelope
