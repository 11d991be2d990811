"""Stack variants built once per test session under recording mocks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pulumi
import pytest

from mailstack_infra.mocks import StackRecord, ensure_event_loop, record_stack
from mailstack_infra.settings import (
    JwtSettings,
    RateLimitSettings,
    ServiceSizing,
    StackConfig,
    load_resource_settings,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
RESOURCES_FILE = REPO_ROOT / "config" / "resources.json"
ZONES = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
CERTIFICATE_ARN = "arn:aws:acm:eu-west-1:123456789012:certificate/test"
# A SendGrid Event Webhook verification key as SendGrid shows it (base64 DER; public).
SENDGRID_EVENT_KEY = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEtestkey"


def base_config(stack: str) -> StackConfig:
    return StackConfig(
        project="mailstack",
        stack=stack,
        owner="platform-team",
        region="eu-west-1",
        resources=load_resource_settings(RESOURCES_FILE),
        elasticemail_api_key="test-ee-key",
        sendgrid_api_key="test-sg-key",
    )


# dev after its images were pushed (the bootstrap run is DEV_BOOTSTRAP).
DEV = replace(
    base_config("dev"),
    db_multi_az=False,
    cache_multi_az=False,
    cache_node_count=1,
    images_ready=True,
    gateway_image_tag="dev",
    processor_image_tag="dev",
)
# The first `pulumi up` of dev, before any image exists.
DEV_BOOTSTRAP = replace(DEV, images_ready=False)


def prod_config() -> StackConfig:
    """Built per recording: secret Outputs belong to the event loop that resolves them."""
    return replace(
        base_config("prod"),
        az_count=3,
        nat_per_az=True,
        deletion_protection=True,
        require_tls=True,
        certificate_arn=CERTIFICATE_ARN,
        db_replica_count=2,
        db_instance_class="db.m7g.large",
        db_backup_retention_days=14,
        gateway=ServiceSizing(512, 1024, 3, 12),
        processor=ServiceSizing(512, 1024, 2, 20),
        images_ready=True,
        gateway_image_tag="1.2.3",
        processor_image_tag="4.5.6",
        mutable_image_tags=(),
        db_backup_plan=True,
        interface_endpoints=True,
        alarm_email="oncall@example.com",
        elasticemail_api_key=pulumi.Output.secret("ee-key"),
        sendgrid_api_key=pulumi.Output.secret("sg-key"),
        sendgrid_event_webhook_public_key=SENDGRID_EVENT_KEY,
        elasticemail_notification_secret=pulumi.Output.secret("ee-notification-secret"),
        provider_event_max_age_seconds=600,
    )


# dev as a deployment that trusts its identity provider and tightens the rate limits.
DEV_WITH_JWT = replace(
    DEV,
    jwt=JwtSettings(
        issuer="https://login.example.com/",
        audience="mailstack-api",
        jwks_url="https://login.example.com/.well-known/jwks.json",
        algorithms=("RS256",),
        tenant_claim="org",
    ),
    rate_limits=RateLimitSettings(
        send_per_minute=120,
        read_per_minute=240,
        auth_cache_seconds=5,
        api_key_last_used_flush_seconds=30,
    ),
)

# dev with its services' Prometheus metrics written to CloudWatch by a collector sidecar.
COLLECTOR_BY_DIGEST = (
    "public.ecr.aws/aws-observability/aws-otel-collector:v0.47.0@sha256:" + "0" * 64
)
DEV_OBSERVED = replace(
    DEV,
    prometheus_to_cloudwatch=True,
    metrics_api_key="ms_test_admin_key",
    collector_image=COLLECTOR_BY_DIGEST,
)

# dev with its services' logs sent to Datadog through a FireLens log router.
DATADOG_API_KEY_SECRET_ARN = (
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ops/datadog-api-key-AbCdEf"
)
DEV_DATADOG = replace(
    DEV,
    datadog_api_key_secret_arn=DATADOG_API_KEY_SECRET_ARN,
    datadog_site="datadoghq.eu",
    log_router_image=(
        "public.ecr.aws/aws-observability/aws-for-fluent-bit:2.32.5.20250527@sha256:" + "1" * 64
    ),
)


LOCALSTACK = replace(
    base_config("localstack"),
    region="us-east-1",
    target="localstack",
    local_database_url="postgresql+psycopg://postgres@127.0.0.1:5432/mailstack",
)


def pytest_configure(config: pytest.Config) -> None:
    # pulumi_aws warns about its own deprecated resource types the moment they are imported.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_aws.*")


def record(config: StackConfig) -> StackRecord:
    # Imported here, after pytest_configure, so pulumi_aws's import-time warnings are filtered.
    from mailstack_infra.stack import build_stack

    return record_stack(
        lambda: build_stack(config, pulumi.FileArchive(str(REPO_ROOT / config.jobs_archive_path))),
        project=config.project,
        stack=config.stack,
        region=config.region,
        zones=ZONES,
    )


@pytest.fixture(scope="session")
def dev() -> StackRecord:
    return record(DEV)


@pytest.fixture(scope="session")
def sendgrid_event_key() -> str:
    """The SendGrid verification key the prod recording is configured with."""
    return SENDGRID_EVENT_KEY


@pytest.fixture(scope="session")
def prod() -> StackRecord:
    ensure_event_loop()
    return record(prod_config())


@pytest.fixture(scope="session")
def dev_bootstrap() -> StackRecord:
    return record(DEV_BOOTSTRAP)


@pytest.fixture(scope="session")
def dev_reserving_concurrency() -> StackRecord:
    return record(replace(DEV, jobs_reserved_concurrency=1))


@pytest.fixture(scope="session")
def dev_with_jwt() -> StackRecord:
    return record(DEV_WITH_JWT)


@pytest.fixture(scope="session")
def observed_config() -> StackConfig:
    return DEV_OBSERVED


@pytest.fixture(scope="session")
def dev_observed() -> StackRecord:
    return record(DEV_OBSERVED)


@pytest.fixture(scope="session")
def datadog_config() -> StackConfig:
    return DEV_DATADOG


@pytest.fixture(scope="session")
def dev_datadog() -> StackRecord:
    return record(DEV_DATADOG)


@pytest.fixture(scope="session")
def localstack() -> StackRecord:
    return record(LOCALSTACK)
