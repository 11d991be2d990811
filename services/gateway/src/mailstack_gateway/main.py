"""Composition root of the gateway: builds settings, engines and clients, and wires the app."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from limits.aio.storage import MemoryStorage, Storage
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mailstack_core import heap, schema, telemetry
from mailstack_core.database import check_on_checkout, normalize_database_url
from mailstack_core.lazy import OnFirstUse
from mailstack_core.logs import configure_logging
from mailstack_gateway import api, console, delivery_api, operations, outbox, scheduler, webhooks
from mailstack_gateway.attachments import S3AttachmentStore, s3_client
from mailstack_gateway.credentials import (
    ApiKeyAuthenticator,
    Authenticator,
    CredentialStore,
    JwtSettings,
    JwtVerifier,
)
from mailstack_gateway.delivery_store import ProviderEventStore, SuppressionStore
from mailstack_gateway.event_signatures import (
    SendGridVerifier,
    SharedSecretVerifier,
    load_public_key,
)
from mailstack_gateway.group_commit import GroupCommit
from mailstack_gateway.keys import AsyncKeyAdmin
from mailstack_gateway.middleware import GatewayMiddleware
from mailstack_gateway.queue import SqsEmailPublisher, sqs_client
from mailstack_gateway.ratelimit import RateLimiter, redis_storage
from mailstack_gateway.redrive import SqsRedrive
from mailstack_gateway.repository import EmailReader, EmailWriter
from mailstack_gateway.schemas import EmailBatchCreate, EmailCreate
from mailstack_gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from sentry_sdk.integrations import Integration

log = structlog.get_logger(__name__)

# Concurrent batch publishers: while one batch is on its way to SQS, the next one forms.
INLINE_PUBLISHERS = 2
SERVICE_NAME = "mailstack-gateway"
# Probes and scrapes make no spans.
UNTRACED_PATHS = "/healthz,/metrics"


def _engine(url: str, settings: GatewaySettings) -> AsyncEngine:
    """A pool whose connections are checked without a round trip as they are handed out (a
    connection a database restart closed is replaced, not used)."""
    return check_on_checkout(
        create_async_engine(
            normalize_database_url(url),
            pool_size=settings.database_pool_size,
            max_overflow=0,
            pool_timeout=settings.database_timeout_seconds,
            connect_args={"connect_timeout": max(1, int(settings.database_timeout_seconds))},
        )
    )


def _authenticator(settings: GatewaySettings, engine: AsyncEngine) -> Authenticator:
    store = CredentialStore(engine)
    jwts = None
    if settings.jwt_issuer is not None:
        assert settings.jwt_audience is not None  # the settings' validator insists
        jwts = JwtVerifier(
            JwtSettings(
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                algorithms=settings.jwt_algorithms,
                jwks_url=settings.jwt_jwks_url,
                public_key=settings.jwt_public_key,
                tenant_claim=settings.jwt_tenant_claim,
                scope_claim=settings.jwt_scope_claim,
                jwks_cache_seconds=settings.jwt_jwks_cache_seconds,
                tenant_cache_seconds=settings.auth_cache_seconds,
            ),
            store,
        )
    return Authenticator(ApiKeyAuthenticator(store, settings.auth_cache_seconds), jwts)


def schema_check(engine: AsyncEngine) -> Callable[[], Awaitable[bool]]:
    """Whether the database answers and its schema serves this code: what the load balancer
    asks before it sends a task traffic (`/healthz?deep=1`)."""

    async def check() -> bool:
        async with engine.connect() as connection:
            revisions = await connection.run_sync(schema.current_revisions)
        return schema.schema_is_current(revisions)

    return check


def _delivery_services(
    settings: GatewaySettings, engine: AsyncEngine
) -> delivery_api.DeliveryServices:
    """Provider events and suppressions; a malformed SendGrid key stops the start."""
    sendgrid = None
    if settings.sendgrid_event_webhook_public_key:
        sendgrid = SendGridVerifier(
            load_public_key(settings.sendgrid_event_webhook_public_key),
            settings.provider_event_max_age_seconds,
        )
    secret = settings.elasticemail_notification_secret
    return delivery_api.DeliveryServices(
        events=ProviderEventStore(engine),
        suppressions=SuppressionStore(engine),
        max_request_bytes=settings.max_request_bytes,
        sendgrid=sendgrid,
        elasticemail=(
            SharedSecretVerifier(secret.get_secret_value())
            if secret is not None and secret.get_secret_value()
            else None
        ),
    )


def _rate_limit_storage(settings: GatewaySettings) -> Storage:
    if settings.redis_url is None:
        log.warning("ratelimit.in_process", reason="REDIS_URL is not set")
        return MemoryStorage()
    return redis_storage(settings.redis_url, settings.redis_timeout_seconds)


def create_app(
    settings: GatewaySettings,
    *,
    run_relay: bool = True,
    tracer_provider: "TracerProvider | None" = None,
) -> FastAPI:
    """Build the app; nothing connects until the first request or the lifespan starts. With a
    `tracer_provider` every request gets a span (none without: no tracing cost at all)."""
    primary = _engine(settings.database_url, settings)
    replica = (
        _engine(settings.database_read_url, settings)
        if settings.database_read_url and settings.database_read_url != settings.database_url
        else None
    )
    sqs = sqs_client(settings.aws_endpoint_url, settings.aws_region)
    publisher = SqsEmailPublisher(sqs, settings.email_queue_url)
    writer = EmailWriter(
        primary, settings.outbox_grace_seconds, settings.outbox_max_backoff_seconds
    )
    services = api.Services(
        writer=writer,
        primary_reader=EmailReader(primary),
        replica_reader=EmailReader(replica) if replica is not None else None,
        publisher=publisher,
        attachments=S3AttachmentStore(
            OnFirstUse(partial(s3_client, settings.aws_endpoint_url, settings.aws_region)),
            settings.attachments_bucket,
        ),
        max_request_bytes=settings.max_request_bytes,
        # Keys are looked up on the primary: a key created a moment ago works at once.
        authenticator=_authenticator(settings, primary),
        rate_limiter=RateLimiter(
            _rate_limit_storage(settings),
            settings.rate_limit_send_per_minute,
            settings.rate_limit_read_per_minute,
        ),
        intake_store=GroupCommit(
            writer,
            writers=settings.intake_group_writers,
            max_emails=settings.intake_group_max_emails,
        ),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        telemetry.report_errors_of_tasks()
        tasks = [
            asyncio.create_task(services.inline.run(), name=f"inline-publisher-{n}")
            for n in range(INLINE_PUBLISHERS)
        ]
        tasks.append(
            asyncio.create_task(
                services.authenticator.api_keys.run_flusher(
                    settings.api_key_last_used_flush_seconds
                ),
                name="api-key-last-used",
            )
        )
        if run_relay:
            tasks.append(
                asyncio.create_task(
                    outbox.run_reconciler(
                        writer, settings.stranded_after_seconds, settings.stranded_check_seconds
                    ),
                    name="outbox-reconciler",
                )
            )
            tasks.append(
                asyncio.create_task(
                    outbox.run_relay(writer, publisher, settings.outbox_poll_seconds),
                    name="outbox-relay",
                )
            )
            tasks.append(
                asyncio.create_task(
                    scheduler.run_scheduler(
                        writer, services.inline, settings.scheduler_poll_seconds
                    ),
                    name="due-scheduler",
                )
            )
        log.info("gateway.started", relay=run_relay, read_replica=replica is not None)
        try:
            yield
        finally:
            await services.inline.drain(timeout_seconds=5)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError):
                    await task
            await primary.dispose()
            if replica is not None:
                await replica.dispose()
            log.info("gateway.stopped")

    app = FastAPI(
        title="mailstack gateway",
        version="1.0.0",
        description="Accepts transactional emails (202 at once) and reports their status.",
        lifespan=lifespan,
        # Served by api.py behind the admin scope instead.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.services = services
    app.state.delivery = _delivery_services(settings, primary)
    app.state.schema_check = schema_check(primary)
    api.install(app)
    console.install(
        app,
        console.Console(
            console.SessionStore(primary),
            console.ConsoleQueries(replica if replica is not None else primary),
            console.ConsoleConfig(
                session_lifetime=timedelta(hours=settings.console_session_hours),
                secure_cookies=settings.console_secure_cookies,
            ),
        ),
    )
    webhooks.install(
        app,
        webhooks.WebhookStore(primary),
        webhooks.WebhookPolicy(settings.webhook_http_hosts, settings.webhook_allowed_networks),
    )
    app.include_router(delivery_api.router)
    operations.install(
        app,
        operations.Operations(
            keys=AsyncKeyAdmin(primary),
            breakers=console.ConsoleQueries(primary),
            redrive=SqsRedrive(sqs, settings.email_dlq_url, settings.email_queue_url)
            if settings.email_dlq_url
            else None,
        ),
    )
    app.add_middleware(GatewayMiddleware, quota_state=api.QUOTA_STATE)
    if tracer_provider is not None:
        # Imported only when tracing is on, as are Sentry's integrations: start-up time.
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=tracer_provider,
            excluded_urls=UNTRACED_PATHS,
            exclude_spans=["receive", "send"],
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, routes=app.routes, description=app.description
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            # The request bodies are parsed by hand (every error at once), so FastAPI does not
            # see their models: they are added here.
            for model in (EmailCreate, EmailBatchCreate):
                model_schema = model.model_json_schema(
                    by_alias=True, ref_template="#/components/schemas/{model}"
                )
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            schema["components"]["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (ms_...) or a JWT from the configured issuer",
                },
                **delivery_api.SECURITY_SCHEMES,
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def sentry_integrations() -> "list[Integration]":
    """Unhandled request errors are reported with their request (never its credentials)."""
    from sentry_sdk.integrations.fastapi import FastApiIntegration
    from sentry_sdk.integrations.starlette import StarletteIntegration

    return [StarletteIntegration(), FastApiIntegration()]


def run() -> None:
    settings = GatewaySettings()  # values come from the environment
    observed = telemetry.configure_telemetry(
        settings,
        SERVICE_NAME,
        sentry_integrations=sentry_integrations() if settings.sentry_dsn else (),
    )
    configure_logging(
        settings.log_level,
        settings.log_format,
        datadog_trace_ids=settings.dd_logs_injection,
        processors=telemetry.log_processors(),
    )
    try:
        app = create_app(settings, tracer_provider=observed.tracer_provider)
        heap.freeze_startup_heap()
        uvicorn.run(
            app,
            host=settings.gateway_host,
            port=settings.gateway_port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
            timeout_keep_alive=settings.gateway_keep_alive_seconds,
        )
    finally:
        observed.shutdown()
