"""Typed settings of one stack, read from Pulumi config and config/resources.json."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pulumi

from mailstack_infra.sidecars import COLLECTOR_IMAGE, LOG_ROUTER_IMAGE

Target = Literal["aws", "localstack"]
# The CPU architectures Fargate runs, and the `docker build --platform` each needs.
TASK_PLATFORMS = {"X86_64": "linux/amd64", "ARM64": "linux/arm64"}

# Signature algorithms the gateway may accept: public-key ones only, so a token can never be
# forged with a secret that sits in the gateway's own configuration (HS*) or with none at all.
ASYMMETRIC_JWT_ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    }
)


class ConfigError(ValueError):
    """A stack's configuration is missing a value or holds an impossible one."""


@dataclass(frozen=True)
class QueueSettings:
    """The email queue and its dead-letter queue, exactly as config/resources.json states them."""

    name: str
    visibility_timeout_seconds: int
    receive_wait_time_seconds: int
    message_retention_seconds: int
    max_receive_count: int
    dlq_name: str
    dlq_message_retention_seconds: int


@dataclass(frozen=True)
class ResourceSettings:
    """The settings shared with the local bootstrap (one source of truth)."""

    queue: QueueSettings
    archive_bucket_name: str
    attachments_bucket_name: str
    attachments_expire_after_days: int


@dataclass(frozen=True)
class ServiceSizing:
    """CPU, memory and task counts of one Fargate service."""

    cpu: int
    memory: int
    min_tasks: int
    max_tasks: int


@dataclass(frozen=True)
class JwtSettings:
    """How the gateway verifies bearer tokens from the deployment's identity provider."""

    issuer: str
    audience: str
    jwks_url: str | None = None
    public_key: str | None = None
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    tenant_claim: str = "tenant"
    scope_claim: str = "scope"

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ConfigError("mailstack:jwtIssuer must not be empty")
        if not self.audience:
            raise ConfigError("mailstack:jwtIssuer needs mailstack:jwtAudience")
        if (self.jwks_url is None) == (self.public_key is None):
            raise ConfigError(
                "mailstack:jwtIssuer needs exactly one of mailstack:jwtJwksUrl and "
                "mailstack:jwtPublicKey"
            )
        if not self.algorithms:
            raise ConfigError("mailstack:jwtAlgorithms must list at least one algorithm")
        refused = [alg for alg in self.algorithms if alg not in ASYMMETRIC_JWT_ALGORITHMS]
        if refused:
            raise ConfigError(
                f"mailstack:jwtAlgorithms may list asymmetric algorithms only "
                f"({', '.join(sorted(ASYMMETRIC_JWT_ALGORITHMS))}), not {', '.join(refused)}"
            )
        if not self.tenant_claim or not self.scope_claim:
            raise ConfigError("mailstack:jwtTenantClaim and mailstack:jwtScopeClaim must be set")


@dataclass(frozen=True)
class RateLimitSettings:
    """The gateway's per-credential defaults (tenants may override them in the database)."""

    send_per_minute: int = 600
    read_per_minute: int = 1200
    auth_cache_seconds: int = 10
    api_key_last_used_flush_seconds: int = 60

    def __post_init__(self) -> None:
        if self.send_per_minute < 1 or self.read_per_minute < 1:
            raise ConfigError(
                "mailstack:rateLimitSendPerMinute and rateLimitReadPerMinute must be positive"
            )
        if self.auth_cache_seconds < 0:
            raise ConfigError("mailstack:authCacheSeconds must not be negative")
        if self.api_key_last_used_flush_seconds < 1:
            raise ConfigError("mailstack:apiKeyLastUsedFlushSeconds must be positive")


@dataclass(frozen=True)
class StackConfig:
    """Everything `build_stack` needs; no Pulumi config is read past this point."""

    project: str
    stack: str
    owner: str
    region: str
    resources: ResourceSettings
    target: Target = "aws"
    localstack_endpoint: str = "http://localhost:4566"
    local_database_url: str | None = None
    vpc_cidr: str = "10.0.0.0/16"
    az_count: int = 2
    nat_per_az: bool = False
    deletion_protection: bool = False
    certificate_arn: str | None = None
    require_tls: bool = False
    # False until the images are pushed: the first `pulumi up` then creates everything but the
    # ECS services and the migration, which need an image to run (docs/deploy.md, bootstrap).
    images_ready: bool = False
    gateway_image_tag: str = "latest"
    processor_image_tag: str = "latest"
    # Tags matching these ECR wildcard filters may be pushed again (a `dev` tag that follows a
    # branch); every other tag is immutable. The task definitions pin the pushed digest, so a
    # re-pushed tag reaches ECS only through `pulumi up`.
    mutable_image_tags: tuple[str, ...] = ("dev*",)
    task_architecture: str = "X86_64"
    gateway: ServiceSizing = field(default_factory=lambda: ServiceSizing(256, 512, 2, 4))
    processor: ServiceSizing = field(default_factory=lambda: ServiceSizing(256, 512, 1, 4))
    # The webhook dispatcher: one task (connections.DISPATCHER_MAX_TASKS).
    dispatcher: ServiceSizing = field(default_factory=lambda: ServiceSizing(256, 512, 1, 1))
    gateway_requests_per_target: int = 500
    processor_backlog_per_task: int = 100
    db_instance_class: str = "db.t4g.micro"
    db_engine_major: str = "17"
    db_allocated_storage: int = 20
    db_max_allocated_storage: int = 100
    db_multi_az: bool = True
    db_backup_retention_days: int = 7
    db_replica_count: int = 0
    # RDS's max_connections, set explicitly; None derives it from the instance class's memory.
    db_max_connections: int | None = None
    # An AWS Backup plan for the primary, on top of RDS's own automated backups.
    db_backup_plan: bool = False
    cache_node_type: str = "cache.t4g.micro"
    cache_engine_version: str = "8.0"
    cache_node_count: int = 2
    cache_multi_az: bool = True
    log_retention_days: int = 30
    alarm_email: str | None = None
    jobs_archive_path: str = "build/jobs.zip"
    jobs_runtime: str = "python3.11"
    # Unset: a new account's Lambda quota (10) leaves nothing to reserve. The jobs lock the
    # rows they work on, so overlapping runs are safe without it.
    jobs_reserved_concurrency: int | None = None
    # SQS, Secrets Manager, ECR and CloudWatch Logs reached through interface endpoints
    # instead of the NAT gateway; the S3 gateway endpoint (free) is always there.
    interface_endpoints: bool = False
    # A collector sidecar in each service's task writes its Prometheus metrics to CloudWatch
    # (namespace `mailstack`), where the dashboard's per-metric widgets read them.
    prometheus_to_cloudwatch: bool = False
    # The admin-scope API key the collector scrapes the gateway's /metrics with (required with
    # prometheus_to_cloudwatch), and the collector's image (the production policy wants a digest).
    metrics_api_key: pulumi.Input[str] | None = None
    collector_image: str = COLLECTOR_IMAGE
    # A Secrets Manager secret holding a Datadog API key: the services' logs then go to
    # Datadog through a FireLens log router (image below) instead of CloudWatch.
    datadog_api_key_secret_arn: str | None = None
    datadog_site: str = "datadoghq.com"
    log_router_image: str = LOG_ROUTER_IMAGE
    # Requests one client IP may make in five minutes before the WAF blocks it.
    waf_requests_per_five_minutes: int = 20_000
    retention_days: int = 183
    # Delivered or given-up webhook events (and their attempts) are deleted this long after.
    webhook_event_retention_days: int = 30
    archive_glacier_after_days: int = 30
    archive_expire_after_days: int = 2555
    cleanup_schedule: str = "cron(15 3 * * ? *)"
    retry_schedule: str = "cron(0/15 * * * ? *)"
    elasticemail_api_key: pulumi.Input[str] | None = None
    sendgrid_api_key: pulumi.Input[str] | None = None
    # Provider events in (docs/deploy.md): SendGrid's Event Webhook verification key (public,
    # base64 DER or PEM, as SendGrid shows it), ElasticEmail's notification secret (a secret),
    # and the largest age of a signed SendGrid timestamp the gateway accepts (None: its default).
    sendgrid_event_webhook_public_key: str | None = None
    elasticemail_notification_secret: pulumi.Input[str] | None = None
    provider_event_max_age_seconds: int | None = None
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    jwt: JwtSettings | None = None

    def __post_init__(self) -> None:
        if self.prometheus_to_cloudwatch and self.metrics_api_key is None:
            raise ConfigError(
                "mailstack:prometheusToCloudWatch needs mailstack:metricsApiKey "
                "(an admin-scope API key: the gateway's /metrics answers no other)"
            )
        if self.target not in ("aws", "localstack"):
            raise ConfigError(f"mailstack:target must be aws or localstack, not {self.target!r}")
        if self.task_architecture not in TASK_PLATFORMS:
            raise ConfigError(
                f"mailstack:taskArchitecture must be one of {sorted(TASK_PLATFORMS)}, "
                f"not {self.task_architecture!r}"
            )
        if not 2 <= self.az_count <= 3:
            raise ConfigError("mailstack:azCount must be 2 or 3")
        if self.target == "localstack" and not self.local_database_url:
            raise ConfigError("the localstack stack needs mailstack:localDatabaseUrl")
        if self.require_tls and self.target == "aws" and not self.certificate_arn:
            raise ConfigError(
                "this stack requires TLS: pulumi config set mailstack:certificateArn <acm arn>"
            )
        if self.db_backup_retention_days < 7:
            raise ConfigError("mailstack:dbBackupRetentionDays must be at least 7")
        if self.gateway.min_tasks < 2:
            raise ConfigError("the gateway runs at least 2 tasks (one per AZ)")
        if self.retention_days < 1:
            raise ConfigError("mailstack:retentionDays must be positive")
        if self.webhook_event_retention_days < 1:
            raise ConfigError("mailstack:webhookEventRetentionDays must be positive")
        # A replication group holds one primary and up to five replicas.
        if not 1 <= self.cache_node_count <= 6:
            raise ConfigError("mailstack:cacheNodeCount must be between 1 and 6")
        if self.cache_multi_az and self.cache_node_count < 2:
            raise ConfigError("mailstack:cacheMultiAz needs mailstack:cacheNodeCount of 2 or more")
        if self.jwt is not None and self.target == "aws":
            # A deployment trusts its identity provider over TLS only; this also keeps out the
            # local harness's development issuer, which speaks plain HTTP.
            for key, url in (("jwtIssuer", self.jwt.issuer), ("jwtJwksUrl", self.jwt.jwks_url)):
                if url is not None and not url.startswith("https://"):
                    raise ConfigError(f"mailstack:{key} must be an https:// URL, not {url!r}")
        if self.target == "aws":
            self._check_deployment()

    def _check_deployment(self) -> None:
        """What only a stack on AWS needs: its secrets, its on-call address, sane limits."""
        missing = [
            f"mailstack:{key}"
            for key, value in (
                ("elasticEmailApiKey", self.elasticemail_api_key),
                ("sendGridApiKey", self.sendgrid_api_key),
            )
            if value is None
        ]
        if missing:
            # The processor needs both keys; a secret without a value stops every task at start.
            raise ConfigError(
                f"{' and '.join(missing)} must be set: pulumi config set --secret "
                f"{missing[0]} <key> (docs/deploy.md, step 2)"
            )
        if self.deletion_protection and not self.alarm_email:
            raise ConfigError(
                "mailstack:alarmEmail is required in production (deletionProtection): "
                "pulumi config set mailstack:alarmEmail oncall@example.com"
            )
        if self.jobs_reserved_concurrency is not None and self.jobs_reserved_concurrency < 1:
            raise ConfigError("mailstack:jobsReservedConcurrency must be at least 1 when set")
        if self.waf_requests_per_five_minutes < 10:
            raise ConfigError("mailstack:wafRequestsPerFiveMinutes must be at least 10")
        if (
            self.provider_event_max_age_seconds is not None
            and self.provider_event_max_age_seconds < 1
        ):
            raise ConfigError("mailstack:providerEventMaxAgeSeconds must be at least 1")
        if self.db_max_connections is not None and self.db_max_connections < 20:
            raise ConfigError("mailstack:dbMaxConnections must be at least 20")

    @property
    def platform(self) -> str:
        """The `docker build --platform` the images need to run on the tasks' architecture."""
        return TASK_PLATFORMS[self.task_architecture]

    @property
    def is_localstack(self) -> bool:
        """Whether this stack targets LocalStack instead of AWS."""
        return self.target == "localstack"

    @property
    def prefix(self) -> str:
        """The prefix of every physical name, so stacks can share one account."""
        return f"{self.project}-{self.stack}"


def load_resource_settings(path: Path) -> ResourceSettings:
    """Read the queue, dead-letter queue and buckets' settings from config/resources.json."""
    raw = json.loads(path.read_text())
    queue = raw["email_queue"]
    dlq = raw["dead_letter_queue"]
    return ResourceSettings(
        queue=QueueSettings(
            name=queue["name"],
            visibility_timeout_seconds=int(queue["visibility_timeout_seconds"]),
            receive_wait_time_seconds=int(queue["receive_wait_time_seconds"]),
            message_retention_seconds=int(queue["message_retention_seconds"]),
            max_receive_count=int(queue["max_receive_count"]),
            dlq_name=dlq["name"],
            dlq_message_retention_seconds=int(dlq["message_retention_seconds"]),
        ),
        archive_bucket_name=raw["archive_bucket"]["name"],
        attachments_bucket_name=raw["attachments_bucket"]["name"],
        attachments_expire_after_days=int(raw["attachments_bucket"]["expire_after_days"]),
    )


def _sizing(raw: Mapping[str, Any] | None, default: ServiceSizing) -> ServiceSizing:
    if raw is None:
        return default
    return ServiceSizing(
        cpu=int(raw.get("cpu", default.cpu)),
        memory=int(raw.get("memory", default.memory)),
        min_tasks=int(raw.get("minTasks", default.min_tasks)),
        max_tasks=int(raw.get("maxTasks", default.max_tasks)),
    )


def _tag_filters(raw: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated ECR wildcard filters; an empty string makes every tag immutable."""
    if raw is None:
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


JWT_KEYS = (
    "jwtAudience",
    "jwtJwksUrl",
    "jwtPublicKey",
    "jwtAlgorithms",
    "jwtTenantClaim",
    "jwtScopeClaim",
)


def _jwt(config: pulumi.Config) -> JwtSettings | None:
    """JWT verification when mailstack:jwtIssuer is set; none (API keys only) otherwise."""
    issuer = config.get("jwtIssuer")
    if issuer is None:
        stray = [f"mailstack:{key}" for key in JWT_KEYS if config.get(key) is not None]
        if stray:
            raise ConfigError(f"{', '.join(stray)} set without mailstack:jwtIssuer")
        return None
    defaults = JwtSettings(issuer="unused", audience="unused", jwks_url="unused")
    algorithms = config.get("jwtAlgorithms")
    return JwtSettings(
        issuer=issuer,
        audience=config.get("jwtAudience") or "",
        jwks_url=config.get("jwtJwksUrl"),
        public_key=config.get("jwtPublicKey"),
        algorithms=defaults.algorithms
        if algorithms is None
        else tuple(part.strip() for part in algorithms.split(",") if part.strip()),
        tenant_claim=config.get("jwtTenantClaim") or defaults.tenant_claim,
        scope_claim=config.get("jwtScopeClaim") or defaults.scope_claim,
    )


def load_stack_config(
    config: pulumi.Config, *, project: str, stack: str, region: str, resources: ResourceSettings
) -> StackConfig:
    """Turn the `mailstack:*` Pulumi config of a stack into a StackConfig."""
    defaults = StackConfig(
        project=project,
        stack=stack,
        owner="",
        region="",
        resources=resources,
        local_database_url="unused",
        elasticemail_api_key="unused",
        sendgrid_api_key="unused",
    )
    limits = defaults.rate_limits

    def text(key: str, default: str) -> str:
        return config.get(key) or default

    def number(key: str, default: int) -> int:
        value = config.get_int(key)
        return default if value is None else value

    def flag(key: str, default: bool) -> bool:
        value = config.get_bool(key)
        return default if value is None else value

    return StackConfig(
        project=project,
        stack=stack,
        owner=config.require("owner"),
        region=region,
        resources=resources,
        target=text("target", defaults.target),  # type: ignore[arg-type]  # checked in __post_init__
        localstack_endpoint=text("localstackEndpoint", defaults.localstack_endpoint),
        local_database_url=config.get("localDatabaseUrl"),
        vpc_cidr=text("vpcCidr", defaults.vpc_cidr),
        az_count=number("azCount", defaults.az_count),
        nat_per_az=flag("natPerAz", defaults.nat_per_az),
        deletion_protection=flag("deletionProtection", defaults.deletion_protection),
        certificate_arn=config.get("certificateArn"),
        require_tls=flag("requireTls", defaults.require_tls),
        images_ready=flag("imagesReady", defaults.images_ready),
        gateway_image_tag=text("gatewayImageTag", defaults.gateway_image_tag),
        processor_image_tag=text("processorImageTag", defaults.processor_image_tag),
        mutable_image_tags=_tag_filters(
            config.get("mutableImageTags"), defaults.mutable_image_tags
        ),
        task_architecture=text("taskArchitecture", defaults.task_architecture),
        gateway=_sizing(config.get_object("gateway"), defaults.gateway),
        processor=_sizing(config.get_object("processor"), defaults.processor),
        gateway_requests_per_target=number(
            "gatewayRequestsPerTarget", defaults.gateway_requests_per_target
        ),
        processor_backlog_per_task=number(
            "processorBacklogPerTask", defaults.processor_backlog_per_task
        ),
        db_instance_class=text("dbInstanceClass", defaults.db_instance_class),
        db_engine_major=text("dbEngineMajor", defaults.db_engine_major),
        db_allocated_storage=number("dbAllocatedStorage", defaults.db_allocated_storage),
        db_max_allocated_storage=number("dbMaxAllocatedStorage", defaults.db_max_allocated_storage),
        db_multi_az=flag("dbMultiAz", defaults.db_multi_az),
        db_backup_retention_days=number("dbBackupRetentionDays", defaults.db_backup_retention_days),
        db_replica_count=number("dbReplicaCount", defaults.db_replica_count),
        db_max_connections=config.get_int("dbMaxConnections"),
        db_backup_plan=flag("dbBackupPlan", defaults.db_backup_plan),
        cache_node_type=text("cacheNodeType", defaults.cache_node_type),
        cache_engine_version=text("cacheEngineVersion", defaults.cache_engine_version),
        cache_node_count=number("cacheNodeCount", defaults.cache_node_count),
        cache_multi_az=flag("cacheMultiAz", defaults.cache_multi_az),
        log_retention_days=number("logRetentionDays", defaults.log_retention_days),
        alarm_email=config.get("alarmEmail"),
        jobs_archive_path=text("jobsArchive", defaults.jobs_archive_path),
        jobs_runtime=text("jobsRuntime", defaults.jobs_runtime),
        jobs_reserved_concurrency=config.get_int("jobsReservedConcurrency"),
        interface_endpoints=flag("interfaceEndpoints", defaults.interface_endpoints),
        prometheus_to_cloudwatch=flag("prometheusToCloudWatch", defaults.prometheus_to_cloudwatch),
        metrics_api_key=config.get_secret("metricsApiKey"),
        collector_image=text("collectorImage", defaults.collector_image),
        datadog_api_key_secret_arn=config.get("datadogApiKeySecretArn"),
        datadog_site=text("datadogSite", defaults.datadog_site),
        log_router_image=text("logRouterImage", defaults.log_router_image),
        waf_requests_per_five_minutes=number(
            "wafRequestsPerFiveMinutes", defaults.waf_requests_per_five_minutes
        ),
        retention_days=number("retentionDays", defaults.retention_days),
        webhook_event_retention_days=number(
            "webhookEventRetentionDays", defaults.webhook_event_retention_days
        ),
        archive_glacier_after_days=number(
            "archiveGlacierAfterDays", defaults.archive_glacier_after_days
        ),
        archive_expire_after_days=number(
            "archiveExpireAfterDays", defaults.archive_expire_after_days
        ),
        cleanup_schedule=text("cleanupSchedule", defaults.cleanup_schedule),
        retry_schedule=text("retrySchedule", defaults.retry_schedule),
        elasticemail_api_key=config.get_secret("elasticEmailApiKey"),
        sendgrid_api_key=config.get_secret("sendGridApiKey"),
        sendgrid_event_webhook_public_key=config.get("sendGridEventWebhookPublicKey"),
        elasticemail_notification_secret=config.get_secret("elasticEmailNotificationSecret"),
        provider_event_max_age_seconds=config.get_int("providerEventMaxAgeSeconds"),
        rate_limits=RateLimitSettings(
            send_per_minute=number("rateLimitSendPerMinute", limits.send_per_minute),
            read_per_minute=number("rateLimitReadPerMinute", limits.read_per_minute),
            auth_cache_seconds=number("authCacheSeconds", limits.auth_cache_seconds),
            api_key_last_used_flush_seconds=number(
                "apiKeyLastUsedFlushSeconds", limits.api_key_last_used_flush_seconds
            ),
        ),
        jwt=_jwt(config),
    )
