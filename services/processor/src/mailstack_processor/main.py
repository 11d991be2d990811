"""Composition root of the processor: builds settings, engine, clients; runs the consumer."""

import asyncio
import contextlib
import functools
import uuid
from typing import TYPE_CHECKING

import aiohttp
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mailstack_core.database import normalize_database_url
from mailstack_core.lazy import OnFirstUse
from mailstack_processor import delivery, instrumentation, lifecycle
from mailstack_processor.attachments import S3AttachmentSource, s3_client
from mailstack_processor.breakers import CachedCircuitBreakers
from mailstack_processor.consumer import Consumer, poll_grace
from mailstack_processor.dead_letters import DeadLetterWatcher
from mailstack_processor.providers.base import EmailSender
from mailstack_processor.providers.elasticemail import ElasticEmailSender
from mailstack_processor.providers.http import provider_session
from mailstack_processor.providers.sendgrid import SendGridSender
from mailstack_processor.queue import SqsEmailQueue, sqs_client
from mailstack_processor.repository import (
    EmailDeliveryStore,
    PostgresCircuitBreakers,
    delivery_pool,
)
from mailstack_processor.settings import ProcessorSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = structlog.get_logger(__name__)

SERVICE_NAME = "mailstack-processor"
# Of DATABASE_POOL_SIZE, the connections SQLAlchemy keeps for what is not on every delivery's
# path; the rest are the psycopg pool of the hot statements.
ENGINE_POOL_SIZE = 1


def pool_sizes(settings: ProcessorSettings) -> tuple[int, int]:
    """(delivery pool, engine pool): together DATABASE_POOL_SIZE (default: one per concurrent
    delivery), so a deployment's connection budget still holds."""
    total = settings.database_pool_size or settings.max_concurrency
    return max(1, total - ENGINE_POOL_SIZE), ENGINE_POOL_SIZE


def build_senders(settings: ProcessorSettings, session: aiohttp.ClientSession) -> list[EmailSender]:
    available: dict[str, EmailSender] = {
        "elasticemail": ElasticEmailSender(
            session,
            settings.elasticemail_base_url,
            settings.elasticemail_api_key.get_secret_value(),
            settings.provider_timeout_seconds,
        ),
        "sendgrid": SendGridSender(
            session,
            settings.sendgrid_base_url,
            settings.sendgrid_api_key.get_secret_value(),
            settings.provider_timeout_seconds,
        ),
    }
    return [available[name] for name in settings.providers]


def database_engine(settings: ProcessorSettings) -> AsyncEngine:
    """SQLAlchemy's pool, for what is not on every delivery's path (breaker writes, dead
    letters, the health check); the hot statements have a psycopg pool (`delivery_pool`)."""
    return create_async_engine(
        normalize_database_url(settings.database_url),
        pool_size=pool_sizes(settings)[1],
        max_overflow=settings.database_max_overflow,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 3},
    )


async def serve(
    settings: ProcessorSettings,
    stop: asyncio.Event,
    tracer_provider: "TracerProvider | None" = None,
) -> None:
    """Consume until `stop`. Spans (each provider call's HTTP request among them) go to the
    global tracer provider, which is `tracer_provider` when tracing is on."""
    engine = database_engine(settings)
    pool = delivery_pool(settings.database_url, pool_sizes(settings)[0])
    database = EmailDeliveryStore(engine, pool)
    store = instrumentation.TracedDeliveryStore(database)
    breakers = CachedCircuitBreakers(
        PostgresCircuitBreakers(
            engine, settings.breaker_failure_threshold, settings.breaker_cooldown_seconds
        ),
        settings.breaker_cache_seconds,
        threshold=settings.breaker_failure_threshold,
        # A probe ends within one provider deadline; then another delivery may probe.
        probe_seconds=settings.provider_timeout_seconds + 1,
    )
    observed_breakers = instrumentation.ObservedBreakers(breakers)
    instrumentation.preset_metrics(settings.providers)
    async with contextlib.AsyncExitStack() as clients:
        await clients.enter_async_context(pool)
        sqs = await clients.enter_async_context(
            sqs_client(
                settings.aws_endpoint_url, settings.aws_region, settings.receive_wait_seconds
            )
        )
        queue = SqsEmailQueue(
            sqs,
            settings.email_queue_url,
            settings.receive_wait_seconds,
            flush_seconds=settings.sqs_batch_window_seconds,
        )
        session = await clients.enter_async_context(provider_session(settings.max_concurrency * 2))
        senders = build_senders(settings, session)
        attachments = S3AttachmentSource(
            OnFirstUse(
                functools.partial(
                    s3_client,
                    settings.aws_endpoint_url,
                    settings.aws_region,
                    settings.max_concurrency,
                )
            ),
            settings.attachments_bucket,
        )
        policy = delivery.RetryPolicy(
            max_attempts=settings.max_attempts,
            backoff_base_seconds=settings.retry_backoff_base_seconds,
            backoff_max_seconds=settings.retry_backoff_max_seconds,
            poison_backoff_seconds=settings.poison_backoff_seconds,
        )

        async def deliver(email_id: uuid.UUID, receive_count: int) -> delivery.Disposition:
            return await delivery.deliver(
                email_id,
                receive_count,
                store,
                instrumentation.observed_senders(senders),
                policy,
                settings.claim_lease_seconds,
                breakers=observed_breakers,
                attachments=attachments,
            )

        # How long a stop waits for a poll in progress to end (consumer.poll_grace).
        grace = poll_grace(settings.receive_wait_seconds)
        tasks = []
        if settings.email_dlq_url:
            dead_letter_queue = SqsEmailQueue(
                sqs, settings.email_dlq_url, settings.receive_wait_seconds
            )
            watcher = DeadLetterWatcher(
                dead_letter_queue,
                functools.partial(delivery.settle_dead_letter, store=store),
                recheck_seconds=settings.dead_letter_recheck_seconds,
                poll_grace_seconds=grace,
            )
            tasks.append(asyncio.create_task(watcher.run(stop), name="dead-letters"))
        consumer = Consumer(
            queue,
            deliver,
            health_check=database.ping,
            max_concurrency=settings.max_concurrency,
            poison_backoff_seconds=settings.poison_backoff_seconds,
            poll_grace_seconds=grace,
        )
        log.info("processor.started", providers=settings.providers)
        try:
            await consumer.run(stop)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await engine.dispose()


def run() -> None:
    settings = ProcessorSettings()
    lifecycle.run_service(
        settings,
        SERVICE_NAME,
        (settings.log_level, settings.log_format),
        (settings.processor_health_host, settings.processor_health_port),
        functools.partial(serve, settings),
    )
