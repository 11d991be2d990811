"""The one place the jobs are wired: logging, the database engine and the AWS clients."""

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import boto3
from botocore.config import Config
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from mailstack_core.database import normalize_database_url
from mailstack_core.logs import configure_logging
from mailstack_jobs.settings import JobSettings

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sqs.client import SQSClient


class SecretReader(Protocol):
    """The one call of the Secrets Manager client the jobs make."""

    def get_secret_value(self, *, SecretId: str) -> Mapping[str, Any]: ...  # noqa: N803


def _client_config() -> Config:
    return Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"},
    )


def secrets_client(settings: JobSettings) -> SecretReader:
    client: SecretReader = boto3.client(
        "secretsmanager",
        endpoint_url=settings.aws_endpoint_url,
        region_name=settings.aws_region,
        config=_client_config(),
    )
    return client


def s3_client(settings: JobSettings) -> "S3Client":
    return boto3.client(
        "s3",
        endpoint_url=settings.aws_endpoint_url,
        region_name=settings.aws_region,
        config=_client_config(),
    )


def sqs_client(settings: JobSettings) -> "SQSClient":
    return boto3.client(
        "sqs",
        endpoint_url=settings.aws_endpoint_url,
        region_name=settings.aws_region,
        config=_client_config(),
    )


def resolve_database_url(settings: JobSettings, secrets: SecretReader | None = None) -> str:
    """`DATABASE_URL` when given, else the value of the secret `DATABASE_URL_SECRET_ARN`."""
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    assert settings.database_url_secret_arn is not None, "checked by the settings"
    reader = secrets if secrets is not None else secrets_client(settings)
    value = reader.get_secret_value(SecretId=settings.database_url_secret_arn).get("SecretString")
    if not value:
        raise ValueError(f"secret {settings.database_url_secret_arn} holds no SecretString")
    return str(value).strip()


def database_engine(url: str, timeout_seconds: float) -> Engine:
    """No pool: a job runs a few transactions and exits; a warm Lambda must not hold sockets."""
    return create_engine(
        normalize_database_url(url),
        poolclass=NullPool,
        connect_args={"connect_timeout": max(1, int(timeout_seconds))},
    )


class JobSummary(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


def run_job(settings: JobSettings, work: Callable[[Engine], JobSummary]) -> dict[str, Any]:
    """What each Lambda handler does around its job: logging, an engine for the run, the
    summary with the run's duration."""
    started = time.monotonic()
    configure_logging(settings.log_level, settings.log_format, cache_loggers=False)
    engine = database_engine(resolve_database_url(settings), settings.database_timeout_seconds)
    try:
        summary = work(engine)
    finally:
        engine.dispose()
    return {**summary.as_dict(), "duration_seconds": round(time.monotonic() - started, 3)}
