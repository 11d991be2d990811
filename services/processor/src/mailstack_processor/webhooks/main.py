"""Composition root of the webhook dispatcher: settings, engine, guarded HTTP client; runs until
SIGTERM or SIGINT, then lets the deliveries under way finish."""

import asyncio
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import create_async_engine

from mailstack_core import webhooks as hooks
from mailstack_core.database import normalize_database_url
from mailstack_processor import lifecycle
from mailstack_processor.webhooks.dispatcher import Dispatcher, RetryPolicy
from mailstack_processor.webhooks.network import guarded_client
from mailstack_processor.webhooks.settings import DispatcherSettings
from mailstack_processor.webhooks.store import WebhookOutbox

log = structlog.get_logger(__name__)

SERVICE_NAME = "mailstack-dispatcher"


def retry_policy(settings: DispatcherSettings) -> RetryPolicy:
    return RetryPolicy(
        base_seconds=settings.webhook_retry_base_seconds,
        max_seconds=settings.webhook_retry_max_seconds,
        max_event_age=timedelta(seconds=settings.webhook_max_event_age_seconds),
        disable_after=timedelta(seconds=settings.webhook_disable_after_seconds),
    )


async def serve(settings: DispatcherSettings, stop: asyncio.Event) -> None:
    engine = create_async_engine(
        normalize_database_url(settings.database_url),
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 3},
    )
    allowed = hooks.parse_networks(settings.webhook_allowed_networks)
    client = guarded_client(
        allowed, settings.dispatcher_concurrency, settings.webhook_timeout_seconds
    )
    dispatcher = Dispatcher(
        WebhookOutbox(engine),
        client,
        retry_policy(settings),
        http_hosts=settings.webhook_http_hosts,
        concurrency=settings.dispatcher_concurrency,
        lease=timedelta(seconds=settings.webhook_lease_seconds),
        poll_seconds=settings.dispatcher_poll_seconds,
    )
    stats = asyncio.create_task(
        dispatcher.refresh_stats(stop, settings.dispatcher_stats_seconds), name="backlog"
    )
    log.info("dispatcher.started", allowed_networks=[str(n) for n in allowed])
    try:
        await dispatcher.run(stop, settings.shutdown_grace_seconds)
    finally:
        stats.cancel()
        await client.aclose()
        await engine.dispose()
        log.info("dispatcher.stopped")


def run() -> None:
    settings = DispatcherSettings()
    lifecycle.run_service(
        settings,
        SERVICE_NAME,
        (settings.log_level, settings.log_format),
        (settings.dispatcher_health_host, settings.dispatcher_health_port),
        lambda stop, _: serve(settings, stop),
    )
