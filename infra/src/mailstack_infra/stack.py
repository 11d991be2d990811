"""Wires the components into one stack; the only place that knows how they connect."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from pulumi_aws.appautoscaling import (
    PolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationMetricArgs as _CustomMetric,  # noqa: E501 (generated name)
)

from mailstack_infra.backup import BackupPlan, BackupPlanArgs
from mailstack_infra.buckets import (
    PrivateBucket,
    PrivateBucketArgs,
    archive_to_glacier,
    expire_after,
)
from mailstack_infra.cache import Cache, CacheArgs
from mailstack_infra.cluster import Cluster
from mailstack_infra.connections import (
    DISPATCHER_MAX_OVERFLOW,
    DISPATCHER_POOL_SIZE,
    ConnectionBudget,
    max_connections,
    plan_connections,
)
from mailstack_infra.dashboard import DashboardArgs, dashboard
from mailstack_infra.database import APP_USER, Database, DatabaseArgs, sqlalchemy_url
from mailstack_infra.endpoints import Endpoints, EndpointsArgs
from mailstack_infra.firewall import GATEWAY_PORT, Firewall, FirewallArgs
from mailstack_infra.iam import Statement
from mailstack_infra.jobs import JobNetwork, ScheduledJob, ScheduledJobArgs
from mailstack_infra.load_balancer import IDLE_TIMEOUT_SECONDS, LoadBalancer, LoadBalancerArgs
from mailstack_infra.migration import (
    APP_URL_VARIABLE,
    MASTER_URL_VARIABLE,
    Migration,
    MigrationArgs,
)
from mailstack_infra.network import Network, NetworkArgs
from mailstack_infra.observability import AlarmTopic, AlarmTopicArgs, Threshold, alarm
from mailstack_infra.provider import aws_provider
from mailstack_infra.proxy import DatabaseProxy, DatabaseProxyArgs
from mailstack_infra.queue import EmailQueue, EmailQueueArgs
from mailstack_infra.registry import ImageRegistry, ImageRegistryArgs
from mailstack_infra.secrets import Secrets, SecretsArgs
from mailstack_infra.service import (
    FargateService,
    FargateServiceArgs,
    ScalingPolicy,
    TargetGroupAttachment,
    TrackingMetric,
)
from mailstack_infra.settings import JwtSettings, RateLimitSettings, StackConfig
from mailstack_infra.sidecars import DatadogLogs
from mailstack_infra.waf import WebFirewall, WebFirewallArgs

# The gateway's count of republished (stranded) emails, from its `outbox.republished` events.
REPUBLISHED_METRIC = "EmailsRepublished"

# What the gateway may do on the DLQ for the operators' redrive (AWS's list for a move task).
REDRIVE_ACTIONS = [
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ListMessageMoveTasks",
    "sqs:ReceiveMessage",
    "sqs:StartMessageMoveTask",
]

PROCESSOR_HEALTH_PORT = 9101
DISPATCHER_HEALTH_PORT = 9102
CLEANUP_HANDLER = "mailstack_jobs.cleanup.handler"
RETRY_HANDLER = "mailstack_jobs.retry.handler"
# The CA certificates libpq verifies the database with (PGSSLROOTCERT). In the images: the
# Amazon root CAs (RDS Proxy) and the RDS global bundle (instances), put there by the
# Dockerfile; in the Lambda runtime: the system bundle, which holds the Amazon roots (the jobs
# connect through the proxy only).
TASK_DATABASE_CA = "/etc/ssl/certs/mailstack-database-ca.pem"
LAMBDA_DATABASE_CA = "/etc/pki/tls/certs/ca-bundle.crt"
# The gateway keeps idle connections open longer than the ALB does, so the ALB closes them.
GATEWAY_KEEP_ALIVE_SECONDS = IDLE_TIMEOUT_SECONDS + 15


@dataclass(frozen=True)
class Account:
    """Facts about the account and region the stack deploys into."""

    account_id: str
    partition: str
    region: str
    # `com.amazonaws` in the commercial partition: the prefix of VPC endpoint service names.
    service_prefix: str


def build_stack(config: StackConfig, jobs_code: pulumi.Archive) -> dict[str, pulumi.Input[object]]:
    """Declare every resource of one stack and return its outputs."""
    provider = aws_provider(config)
    invoke = pulumi.InvokeOptions(provider=provider)
    partition = aws.get_partition(opts=invoke)
    account = Account(
        account_id=aws.get_caller_identity(opts=invoke).account_id,
        partition=partition.partition,
        region=config.region,
        service_prefix=partition.reverse_dns_prefix,
    )
    top = pulumi.ResourceOptions(providers={"aws": provider})
    prefix = config.prefix

    alarms = AlarmTopic(
        "alarms",
        AlarmTopicArgs(
            prefix=prefix,
            email=config.alarm_email,
            account_id=account.account_id,
            partition=account.partition,
        ),
        top,
    )
    secrets = Secrets(
        "secrets",
        SecretsArgs(
            prefix=prefix,
            recovery_window_days=recovery_window_days(config),
            elasticemail_api_key=config.elasticemail_api_key,
            sendgrid_api_key=config.sendgrid_api_key,
            protect=config.deletion_protection,
            metrics_api_key=config.metrics_api_key if config.prometheus_to_cloudwatch else None,
            elasticemail_notification_secret=config.elasticemail_notification_secret,
        ),
        top,
    )
    queue = EmailQueue(
        "email-queue",
        EmailQueueArgs(
            stack=config.stack,
            settings=config.resources.queue,
            alarm_topic_arn=alarms.topic.arn,
        ),
        top,
    )
    archive = PrivateBucket(
        "archive",
        PrivateBucketArgs(
            bucket_name=f"{config.resources.archive_bucket_name}-{config.stack}-{account.account_id}",
            lifecycle_rules=[
                archive_to_glacier(
                    config.archive_glacier_after_days, config.archive_expire_after_days
                )
            ],
            protect=config.deletion_protection,
        ),
        top,
    )
    # The attachments of accepted emails, put by the gateway and read by the processor; they
    # are needed only until the email is sent, so they expire (days from resources.json).
    attachments = PrivateBucket(
        "attachments",
        PrivateBucketArgs(
            bucket_name=(
                f"{config.resources.attachments_bucket_name}-{config.stack}-{account.account_id}"
            ),
            lifecycle_rules=[expire_after(config.resources.attachments_expire_after_days)],
        ),
        top,
    )

    outputs: dict[str, pulumi.Input[object]] = {
        "email_queue_url": queue.queue.url,
        "dead_letter_queue_url": queue.dead_letter_queue.url,
        "archive_bucket": archive.bucket.bucket,
        "attachments_bucket": attachments.bucket.bucket,
        "alarm_topic_arn": alarms.topic.arn,
        "database_url_secret_arn": secrets.database_url.arn,
        "elasticemail_api_key_secret_arn": secrets.elasticemail_api_key.arn,
        "sendgrid_api_key_secret_arn": secrets.sendgrid_api_key.arn,
    }

    job_network: JobNetwork | None = None
    job_environment: dict[str, pulumi.Input[str]] = {}
    if config.is_localstack:
        # LocalStack's free runtime has no ECS, ECR, RDS or ELB: the services and Postgres run
        # locally (make up), and the jobs deployed here talk to that Postgres.
        local_url = config.local_database_url or ""
        secrets.set_database_urls("local", local_url, local_url)
    else:
        job_network, app_outputs = _build_application(
            config, account, provider, alarms, secrets, queue, attachments
        )
        outputs.update(app_outputs)
        job_environment["PGSSLROOTCERT"] = LAMBDA_DATABASE_CA

    def scheduled_job(
        name: str,
        *,
        description: str,
        handler: str,
        timeout_seconds: int,
        memory_mb: int,
        schedule: str,
        environment: dict[str, pulumi.Input[str]],
        statements: list[Statement],
    ) -> ScheduledJob:
        return ScheduledJob(
            name,
            ScheduledJobArgs(
                prefix=prefix,
                description=description,
                handler=handler,
                code=jobs_code,
                runtime=config.jobs_runtime,
                timeout_seconds=timeout_seconds,
                memory_mb=memory_mb,
                schedule=schedule,
                environment=environment,
                statements=statements,
                log_retention_days=config.log_retention_days,
                alarm_topic_arn=alarms.topic.arn,
                alarm_statements=alarms.publish_statements,
                partition=account.partition,
                network=job_network,
                reserved_concurrency=config.jobs_reserved_concurrency,
                # On AWS the schema exists once the first migration ran (with the images).
                schedule_enabled=config.is_localstack or config.images_ready,
            ),
            top,
        )

    # The jobs resolve DATABASE_URL from this secret at start, so no password sits in their
    # environment.
    read_database_url = Statement(
        actions=["secretsmanager:GetSecretValue"], resources=[secrets.database_url.arn]
    )
    cleanup = scheduled_job(
        "cleanup",
        description=(
            "Archives emails past the retention window to S3, then deletes them; deletes "
            "finished webhook events past theirs"
        ),
        handler=CLEANUP_HANDLER,
        timeout_seconds=900,
        memory_mb=512,
        schedule=config.cleanup_schedule,
        environment={
            "DATABASE_URL_SECRET_ARN": secrets.database_url.arn,
            "ARCHIVE_BUCKET": archive.bucket.bucket,
            "RETENTION_DAYS": str(config.retention_days),
            "WEBHOOK_EVENT_RETENTION_DAYS": str(config.webhook_event_retention_days),
            **job_environment,
        },
        statements=[
            read_database_url,
            Statement(
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[pulumi.Output.concat(archive.bucket.arn, "/*")],
            ),
            Statement(actions=["s3:ListBucket"], resources=[archive.bucket.arn]),
        ],
    )
    retry = scheduled_job(
        "retry",
        description="Re-queues emails that failed for a transient reason",
        handler=RETRY_HANDLER,
        timeout_seconds=300,
        memory_mb=256,
        schedule=config.retry_schedule,
        environment={
            "DATABASE_URL_SECRET_ARN": secrets.database_url.arn,
            "EMAIL_QUEUE_URL": queue.queue.url,
            **job_environment,
        },
        statements=[
            read_database_url,
            Statement(actions=["sqs:SendMessage"], resources=[queue.queue.arn]),
        ],
    )
    outputs["cleanup_function"] = cleanup.function.name
    outputs["retry_function"] = retry.function.name
    return outputs


def recovery_window_days(config: StackConfig) -> int:
    """How long a deleted secret can still be restored."""
    return 30 if config.deletion_protection else 7


def _build_application(
    config: StackConfig,
    account: Account,
    provider: aws.Provider,
    alarms: AlarmTopic,
    secrets: Secrets,
    queue: EmailQueue,
    attachments: PrivateBucket,
) -> tuple[JobNetwork, dict[str, pulumi.Input[object]]]:
    """The AWS-only part: network, edge, Postgres, cache, registries, then (with images) the
    migration and both services."""
    prefix = config.prefix
    top = pulumi.ResourceOptions(providers={"aws": provider})
    invoke = pulumi.InvokeOptions(provider=provider)
    zones = aws.get_availability_zones(state="available", opts=invoke).names[: config.az_count]
    if len(zones) < 2:
        raise ValueError(f"{config.region} offers fewer than two availability zones")

    network = Network(
        "network",
        NetworkArgs(
            prefix=prefix,
            cidr=config.vpc_cidr,
            availability_zones=zones,
            nat_per_az=config.nat_per_az,
            log_retention_days=config.log_retention_days,
            account_id=account.account_id,
        ),
        top,
    )
    firewall = Firewall(
        "firewall",
        FirewallArgs(
            prefix=prefix,
            vpc_id=network.vpc.id,
            https_listener=config.certificate_arn is not None,
            interface_endpoints=config.interface_endpoints,
        ),
        top,
    )
    Endpoints(
        "endpoints",
        EndpointsArgs(
            prefix=prefix,
            vpc_id=network.vpc.id,
            region=config.region,
            service_prefix=account.service_prefix,
            route_table_ids=network.app_route_table_ids,
            subnet_ids=network.app_subnet_ids,
            security_group_id=firewall.endpoints.id if firewall.endpoints else None,
        ),
        top,
    )
    load_balancer = LoadBalancer(
        "edge",
        LoadBalancerArgs(
            prefix=prefix,
            vpc_id=network.vpc.id,
            public_subnet_ids=network.public_subnet_ids,
            security_group_id=firewall.alb.id,
            certificate_arn=config.certificate_arn,
            deletion_protection=config.deletion_protection,
            account_id=account.account_id,
            partition=account.partition,
            alarm_topic_arn=alarms.topic.arn,
        ),
        top,
    )
    WebFirewall(
        "waf",
        WebFirewallArgs(
            prefix=prefix,
            load_balancer_arn=load_balancer.alb.arn,
            requests_per_five_minutes=config.waf_requests_per_five_minutes,
            log_retention_days=config.log_retention_days,
        ),
        top,
    )
    budget = plan_connections(
        max_connections(config.db_instance_class, config.db_max_connections),
        config.gateway,
        config.processor,
    )
    database, proxy = _build_database(
        config, account, top, zones, network, firewall, alarms, secrets, budget
    )
    cache = Cache(
        "cache",
        CacheArgs(
            prefix=prefix,
            engine_version=config.cache_engine_version,
            node_type=config.cache_node_type,
            node_count=config.cache_node_count,
            multi_az=config.cache_multi_az,
            subnet_ids=network.database_subnet_ids,
            security_group_id=firewall.cache.id,
            availability_zones=zones,
            log_retention_days=config.log_retention_days,
            secret_recovery_window_days=recovery_window_days(config),
            alarm_topic_arn=alarms.topic.arn,
            protect=config.deletion_protection,
        ),
        top,
    )
    registry = ImageRegistry(
        "images",
        ImageRegistryArgs(
            prefix=prefix,
            images=["gateway", "processor"],
            mutable_tags=config.mutable_image_tags,
        ),
        top,
    )
    cluster = Cluster("ecs", prefix, top)

    outputs: dict[str, pulumi.Input[object]] = {
        "vpc_id": network.vpc.id,
        "load_balancer_dns_name": load_balancer.alb.dns_name,
        "gateway_url": pulumi.Output.concat(
            "https://" if config.certificate_arn else "http://", load_balancer.alb.dns_name
        ),
        "gateway_repository_url": registry.repositories["gateway"].repository_url,
        "processor_repository_url": registry.repositories["processor"].repository_url,
        "image_platform": config.platform,
        "images_ready": config.images_ready,
        "cluster_name": cluster.cluster.name,
        "database_endpoint": database.primary.endpoint,
        "database_proxy_endpoint": proxy.proxy.endpoint,
        "database_replica_endpoints": [replica.endpoint for replica in database.replicas],
        "database_max_connections": budget.max_connections,
        "cache_endpoint": cache.replication_group.primary_endpoint_address,
        "redis_url_secret_arn": cache.url_secret.arn,
    }
    job_network = JobNetwork(network.app_subnet_ids, firewall.jobs.id)
    if not config.images_ready:
        # Bootstrap: no image exists yet, so no task could start; ECS would fail the first
        # deployment. Push the images, set mailstack:imagesReady, and `pulumi up` again.
        return job_network, outputs

    common = ServiceCommon(
        config=config,
        account=account,
        cluster=cluster,
        registry=registry,
        subnet_ids=network.app_subnet_ids,
        alarm_topic_arn=alarms.topic.arn,
        opts=top,
    )
    migration = Migration(
        "migrate",
        MigrationArgs(
            prefix=prefix,
            cluster_arn=cluster.cluster.arn,
            cluster_name=cluster.cluster.name,
            image=registry.image("gateway", config.gateway_image_tag),
            repository_arn=registry.repositories["gateway"].arn,
            cpu_architecture=config.task_architecture,
            region=config.region,
            account_id=account.account_id,
            partition=account.partition,
            subnet_ids=network.app_subnet_ids,
            security_group_id=firewall.migrate.id,
            secrets={
                MASTER_URL_VARIABLE: database.admin_url_secret.arn,
                APP_URL_VARIABLE: secrets.database_url.arn,
            },
            environment={"PGSSLROOTCERT": TASK_DATABASE_CA},
            runtime=config.jobs_runtime,
            log_retention_days=config.log_retention_days,
        ),
        pulumi.ResourceOptions(providers={"aws": provider}, depends_on=[database, proxy]),
    )
    # New tasks start only on a migrated schema, with their secrets in place.
    ready = [database, proxy, migration.invocation]
    gateway = _gateway(
        common, firewall, queue, attachments, secrets, cache, load_balancer, budget, ready
    )
    processor = _processor(common, firewall, queue, attachments, secrets, budget, ready)
    dispatcher = _dispatcher(common, firewall, secrets, ready)
    dashboard(
        "dashboard",
        DashboardArgs(
            prefix=prefix,
            region=config.region,
            load_balancer_suffix=load_balancer.alb.arn_suffix,
            target_group_suffix=load_balancer.target_group.arn_suffix,
            queue_name=queue.queue.name,
            dead_letter_queue_name=queue.dead_letter_queue.name,
            database_identifier=database.primary.identifier,
            cluster_name=cluster.cluster.name,
            service_names=[
                gateway.service.name,
                processor.service.name,
                dispatcher.service.name,
            ],
        ),
        top,
    )
    outputs.update(
        {
            "gateway_service": gateway.service.name,
            "processor_service": processor.service.name,
            "dispatcher_service": dispatcher.service.name,
            "migration_task_definition": migration.task_definition.arn,
            "migration_log_group": migration.log_group.name,
            # Where a one-off task from the migration definition runs (docs/deploy.md).
            "app_subnet_ids": network.app_subnet_ids,
            "migrate_security_group_id": firewall.migrate.id,
        }
    )
    return job_network, outputs


def _build_database(
    config: StackConfig,
    account: Account,
    top: pulumi.ResourceOptions,
    zones: Sequence[str],
    network: Network,
    firewall: Firewall,
    alarms: AlarmTopic,
    secrets: Secrets,
    budget: ConnectionBudget,
) -> tuple[Database, DatabaseProxy]:
    """Postgres, its proxy, the URLs the services read, and the backup plan."""
    prefix = config.prefix
    database = Database(
        "database",
        DatabaseArgs(
            prefix=prefix,
            engine_major=config.db_engine_major,
            instance_class=config.db_instance_class,
            allocated_storage=config.db_allocated_storage,
            max_allocated_storage=config.db_max_allocated_storage,
            multi_az=config.db_multi_az,
            backup_retention_days=config.db_backup_retention_days,
            replica_count=config.db_replica_count,
            deletion_protection=config.deletion_protection,
            subnet_ids=network.database_subnet_ids,
            security_group_id=firewall.database.id,
            availability_zones=zones,
            log_retention_days=config.log_retention_days,
            partition=account.partition,
            account_id=account.account_id,
            alarm_topic_arn=alarms.topic.arn,
            budget=budget,
            secret_recovery_window_days=recovery_window_days(config),
            protect=config.deletion_protection,
        ),
        top,
    )
    proxy = DatabaseProxy(
        "database-proxy",
        DatabaseProxyArgs(
            prefix=prefix,
            primary_identifier=database.primary.identifier,
            credentials_secret_arn=database.app_credentials_secret.arn,
            subnet_ids=network.database_subnet_ids,
            security_group_id=firewall.proxy.id,
            account_id=account.account_id,
            log_retention_days=config.log_retention_days,
        ),
        top,
    )
    app_url: pulumi.Output[str] = pulumi.Output.secret(
        pulumi.Output.all(database.app_password.result, proxy.proxy.endpoint).apply(
            lambda values: sqlalchemy_url(APP_USER, str(values[0]), str(values[1]))
        )
    )
    secrets.set_database_urls("rds", app_url, database.replica_url or app_url)
    if config.db_backup_plan:
        BackupPlan(
            "database-backup",
            BackupPlanArgs(
                prefix=prefix,
                resource_arns=[database.primary.arn],
                account_id=account.account_id,
                partition=account.partition,
                protect=config.deletion_protection,
            ),
            top,
        )
    return database, proxy


@dataclass(frozen=True)
class ServiceCommon:
    """What both services share: where they run, what they pull, whom they alarm."""

    config: StackConfig
    account: Account
    cluster: Cluster
    registry: ImageRegistry
    subnet_ids: list[pulumi.Output[str]]
    alarm_topic_arn: pulumi.Output[str]
    opts: pulumi.ResourceOptions

    @property
    def datadog(self) -> DatadogLogs | None:
        config = self.config
        if config.datadog_api_key_secret_arn is None:
            return None
        return DatadogLogs(
            api_key_secret_arn=config.datadog_api_key_secret_arn,
            env=config.stack,
            site=config.datadog_site,
            router_image=config.log_router_image,
        )

    def service(
        self,
        name: str,
        *,
        image_tag: str,
        image: str | None = None,
        command: list[str] | None = None,
        security_group_id: pulumi.Input[str],
        environment: dict[str, pulumi.Input[str]],
        secret_arns: dict[str, pulumi.Input[str]],
        health_check_url: str,
        statements: list[Statement],
        scaling_policies: list[ScalingPolicy],
        depends_on: list[pulumi.Resource],
        metrics_port: int,
        metrics_api_key_arn: pulumi.Input[str] | None = None,
        port: int | None = None,
        target_group: TargetGroupAttachment | None = None,
    ) -> FargateService:
        config = self.config
        return FargateService(
            name,
            FargateServiceArgs(
                prefix=config.prefix,
                cluster_arn=self.cluster.cluster.arn,
                cluster_name=self.cluster.cluster.name,
                image=self.registry.image(image or name, image_tag),
                repository_arn=self.registry.repositories[image or name].arn,
                sizing={"gateway": config.gateway, "dispatcher": config.dispatcher}.get(
                    name, config.processor
                ),
                cpu_architecture=config.task_architecture,
                region=config.region,
                account_id=self.account.account_id,
                subnet_ids=self.subnet_ids,
                security_group_id=security_group_id,
                environment={"PGSSLROOTCERT": TASK_DATABASE_CA, **environment},
                secrets=secret_arns,
                health_check_url=health_check_url,
                task_role_statements=statements,
                log_retention_days=config.log_retention_days,
                alarm_topic_arn=self.alarm_topic_arn,
                port=port,
                target_group=target_group,
                scaling_policies=scaling_policies,
                depends_on=depends_on,
                metrics_port=metrics_port if config.prometheus_to_cloudwatch else None,
                collector_image=config.collector_image,
                datadog=self.datadog,
                metrics_api_key_arn=metrics_api_key_arn,
                command=command,
            ),
            self.opts,
        )


def _gateway(
    common: ServiceCommon,
    firewall: Firewall,
    queue: EmailQueue,
    attachments: PrivateBucket,
    secrets: Secrets,
    cache: Cache,
    load_balancer: LoadBalancer,
    budget: ConnectionBudget,
    depends_on: list[pulumi.Resource],
) -> FargateService:
    config = common.config
    prefix = config.prefix
    gateway = common.service(
        "gateway",
        image_tag=config.gateway_image_tag,
        security_group_id=firewall.gateway.id,
        environment={
            "EMAIL_QUEUE_URL": queue.queue.url,
            # The operators' redrive (POST /v1/admin/dead-letters/redrive) moves its messages.
            "EMAIL_DLQ_URL": queue.dead_letter_queue.url,
            "ATTACHMENTS_BUCKET": attachments.bucket.bucket,
            "AWS_REGION": config.region,
            "GATEWAY_HOST": "0.0.0.0",  # noqa: S104  # inside the task; the SG admits only the ALB
            "GATEWAY_PORT": str(GATEWAY_PORT),
            "GATEWAY_KEEP_ALIVE_SECONDS": str(GATEWAY_KEEP_ALIVE_SECONDS),
            "DATABASE_POOL_SIZE": str(budget.gateway_pool),
            **rate_limit_environment(config.rate_limits),
            **jwt_environment(config.jwt),
            **provider_event_environment(config),
        },
        secret_arns={
            "DATABASE_URL": secrets.database_url.arn,
            "DATABASE_READ_URL": secrets.database_read_url.arn,
            # The URL carries the AUTH token, so the whole URL is a secret.
            "REDIS_URL": cache.url_secret.arn,
            **(
                {"ELASTICEMAIL_NOTIFICATION_SECRET": secrets.elasticemail_notification_secret.arn}
                if secrets.elasticemail_notification_secret is not None
                else {}
            ),
        },
        health_check_url=f"http://127.0.0.1:{GATEWAY_PORT}/healthz",
        metrics_port=GATEWAY_PORT,
        # /metrics answers an admin-scope key only.
        metrics_api_key_arn=secrets.metrics_api_key.arn if secrets.metrics_api_key else None,
        statements=[
            Statement(actions=["sqs:SendMessage"], resources=[queue.queue.arn]),
            # Stores a new email's attachments before the email commits; never reads them.
            Statement(
                actions=["s3:PutObject"],
                resources=[pulumi.Output.concat(attachments.bucket.arn, "/*")],
            ),
            # /readyz asks the queue for its attributes.
            Statement(actions=["sqs:GetQueueAttributes"], resources=[queue.queue.arn]),
            # The redrive: an SQS message move task from the DLQ (it receives and deletes
            # there, and sends to the queue, with these rights), and its progress.
            Statement(actions=REDRIVE_ACTIONS, resources=[queue.dead_letter_queue.arn]),
        ],
        port=GATEWAY_PORT,
        target_group=TargetGroupAttachment(
            target_group_arn=load_balancer.target_group.arn,
            container_port=GATEWAY_PORT,
            listeners=load_balancer.listeners,
        ),
        # Tasks start once the URL is in its secret (the gateway fails open without Redis, but
        # ECS cannot start a task whose secret has no value).
        depends_on=[*depends_on, cache],
        scaling_policies=[
            ScalingPolicy(
                name="requests-per-target",
                target_value=config.gateway_requests_per_target,
                predefined_metric="ALBRequestCountPerTarget",
                resource_label=load_balancer.request_count_label,
            ),
            ScalingPolicy(
                name="cpu", target_value=60, predefined_metric="ECSServiceAverageCPUUtilization"
            ),
        ],
    )
    # Emails whose queue message was lost and that the gateway's reconciler published again,
    # counted from its log events: any at all means a queue lost messages.
    aws.cloudwatch.LogMetricFilter(
        "gateway-republished",
        log_group_name=gateway.log_group.name,
        pattern='{ $.event = "outbox.republished" }',
        metric_transformation=aws.cloudwatch.LogMetricFilterMetricTransformationArgs(
            name=REPUBLISHED_METRIC,
            namespace=f"mailstack/{prefix}",
            value="$.count",
            default_value="0",
        ),
        opts=pulumi.ResourceOptions(parent=gateway),
    )
    alarm(
        "gateway-republished",
        description="The gateway republished emails whose queue message was lost",
        namespace=f"mailstack/{prefix}",
        metric=REPUBLISHED_METRIC,
        dimensions={},
        when=Threshold(0, statistic="Sum", period=300, evaluation_periods=1),
        topic_arn=common.alarm_topic_arn,
        parent=gateway,
    )
    return gateway


def _processor(
    common: ServiceCommon,
    firewall: Firewall,
    queue: EmailQueue,
    attachments: PrivateBucket,
    secrets: Secrets,
    budget: ConnectionBudget,
    depends_on: list[pulumi.Resource],
) -> FargateService:
    config = common.config
    consume = [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
    ]
    return common.service(
        "processor",
        image_tag=config.processor_image_tag,
        security_group_id=firewall.processor.id,
        environment={
            "EMAIL_QUEUE_URL": queue.queue.url,
            "ATTACHMENTS_BUCKET": attachments.bucket.bucket,
            # The dead-letter watcher marks FAILED what the queue gave up on.
            "EMAIL_DLQ_URL": queue.dead_letter_queue.url,
            # The last receive the queue allows is the last attempt.
            "MAX_ATTEMPTS": str(config.resources.queue.max_receive_count),
            "AWS_REGION": config.region,
            "ELASTICEMAIL_BASE_URL": "https://api.elasticemail.com",
            "SENDGRID_BASE_URL": "https://api.sendgrid.com",
            "PROVIDER_TIMEOUT_SECONDS": "3",
            "PROCESSOR_HEALTH_PORT": str(PROCESSOR_HEALTH_PORT),
            "DATABASE_POOL_SIZE": str(budget.processor_pool),
            "DATABASE_MAX_OVERFLOW": "0",
        },
        secret_arns={
            "DATABASE_URL": secrets.database_url.arn,
            "ELASTICEMAIL_API_KEY": secrets.elasticemail_api_key.arn,
            "SENDGRID_API_KEY": secrets.sendgrid_api_key.arn,
        },
        health_check_url=f"http://127.0.0.1:{PROCESSOR_HEALTH_PORT}/healthz",
        # Any path of the health port answers with the metrics.
        metrics_port=PROCESSOR_HEALTH_PORT,
        statements=[
            Statement(actions=consume, resources=[queue.queue.arn]),
            Statement(actions=consume, resources=[queue.dead_letter_queue.arn]),
            # Reads an email's attachments to send them; never writes or lists.
            Statement(
                actions=["s3:GetObject"],
                resources=[pulumi.Output.concat(attachments.bucket.arn, "/*")],
            ),
        ],
        scaling_policies=[
            ScalingPolicy(
                name="backlog-per-task",
                target_value=config.processor_backlog_per_task,
                customized_metric=backlog_per_task(
                    queue.queue.name, common.cluster.cluster.name, f"{config.prefix}-processor"
                ),
            )
        ],
        depends_on=depends_on,
    )


def _dispatcher(
    common: ServiceCommon,
    firewall: Firewall,
    secrets: Secrets,
    depends_on: list[pulumi.Resource],
) -> FargateService:
    """The webhook dispatcher: the processor's image with another command, the processor's
    network rules (no ingress; egress to the endpoints on 443) and only the database secret.
    Its SSRF guard allows no private network here: WEBHOOK_ALLOWED_NETWORKS stays empty."""
    config = common.config
    return common.service(
        "dispatcher",
        image="processor",
        image_tag=config.processor_image_tag,
        command=["python", "-m", "mailstack_processor.webhooks"],
        security_group_id=firewall.processor.id,
        environment={
            "DISPATCHER_HEALTH_HOST": "127.0.0.1",
            "DISPATCHER_HEALTH_PORT": str(DISPATCHER_HEALTH_PORT),
            "DATABASE_POOL_SIZE": str(DISPATCHER_POOL_SIZE),
            "DATABASE_MAX_OVERFLOW": str(DISPATCHER_MAX_OVERFLOW),
        },
        secret_arns={"DATABASE_URL": secrets.database_url.arn},
        health_check_url=f"http://127.0.0.1:{DISPATCHER_HEALTH_PORT}/healthz",
        metrics_port=DISPATCHER_HEALTH_PORT,
        # It reaches only Postgres and the tenants' endpoints: no AWS API at all.
        statements=[],
        scaling_policies=[],
        depends_on=depends_on,
    )


def rate_limit_environment(limits: RateLimitSettings) -> dict[str, pulumi.Input[str]]:
    """The gateway's per-credential defaults and API-key caching, as the gateway reads them."""
    return {
        "RATE_LIMIT_SEND_PER_MINUTE": str(limits.send_per_minute),
        "RATE_LIMIT_READ_PER_MINUTE": str(limits.read_per_minute),
        "AUTH_CACHE_SECONDS": str(limits.auth_cache_seconds),
        "API_KEY_LAST_USED_FLUSH_SECONDS": str(limits.api_key_last_used_flush_seconds),
    }


def provider_event_environment(config: StackConfig) -> dict[str, pulumi.Input[str]]:
    """SendGrid's verification key (public, so plain) and the signed events' largest age.

    Unset, the gateway answers SendGrid's events 401; ElasticEmail's secret is an ECS secret.
    """
    environment: dict[str, pulumi.Input[str]] = {}
    if config.sendgrid_event_webhook_public_key:
        environment["SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY"] = config.sendgrid_event_webhook_public_key
    if config.provider_event_max_age_seconds is not None:
        environment["PROVIDER_EVENT_MAX_AGE_SECONDS"] = str(config.provider_event_max_age_seconds)
    return environment


def jwt_environment(jwt: JwtSettings | None) -> dict[str, pulumi.Input[str]]:
    """The JWT variables, or none at all: without JWT_ISSUER the gateway accepts API keys only."""
    if jwt is None:
        return {}
    environment: dict[str, pulumi.Input[str]] = {
        "JWT_ISSUER": jwt.issuer,
        "JWT_AUDIENCE": jwt.audience,
        "JWT_ALGORITHMS": ",".join(jwt.algorithms),
        "JWT_TENANT_CLAIM": jwt.tenant_claim,
        "JWT_SCOPE_CLAIM": jwt.scope_claim,
    }
    if jwt.jwks_url is not None:
        environment["JWT_JWKS_URL"] = jwt.jwks_url
    if jwt.public_key is not None:
        # A public key, not a secret: it only verifies signatures.
        environment["JWT_PUBLIC_KEY"] = jwt.public_key
    return environment


def backlog_per_task(
    queue_name: pulumi.Input[str], cluster_name: pulumi.Input[str], service_name: str
) -> TrackingMetric:
    """Visible messages divided by running processor tasks: the metric the processor tracks."""
    metric = aws.appautoscaling
    return TrackingMetric(
        metrics=[
            _metric_stat(
                "visible",
                "Sum",
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                {"QueueName": queue_name},
            ),
            _metric_stat(
                "tasks",
                "Average",
                "ECS/ContainerInsights",
                "RunningTaskCount",
                {"ClusterName": cluster_name, "ServiceName": service_name},
            ),
            metric.PolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationMetricArgs(
                id="backlog_per_task",
                label="Visible messages per running processor task",
                # A service scaled to zero tasks still reports its whole backlog.
                expression="visible / IF(tasks > 0, tasks, 1)",
                return_data=True,
            ),
        ]
    )


def _metric_stat(
    metric_id: str,
    stat: str,
    namespace: str,
    metric_name: str,
    dimensions: dict[str, pulumi.Input[str]],
) -> _CustomMetric:
    """One CloudWatch statistic, an input (not returned) of a target-tracking metric math."""
    metric = aws.appautoscaling
    return _CustomMetric(
        id=metric_id,
        return_data=False,
        metric_stat=metric.PolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationMetricMetricStatArgs(
            stat=stat,
            metric=metric.PolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationMetricMetricStatMetricArgs(
                namespace=namespace,
                metric_name=metric_name,
                dimensions=[
                    metric.PolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationMetricMetricStatMetricDimensionArgs(
                        name=name, value=value
                    )
                    for name, value in dimensions.items()
                ],
            ),
        ),
    )
