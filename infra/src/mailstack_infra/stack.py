"""Wires the components into one stack; the only place that knows how they connect."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from pulumi_aws.appautoscaling import (
    PolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationMetricArgs as _CustomMetric,  # noqa: E501 (generated name)
)

from mailstack_infra.buckets import (
    PrivateBucket,
    PrivateBucketArgs,
    archive_to_glacier,
    expire_after,
)
from mailstack_infra.cache import Cache, CacheArgs
from mailstack_infra.cluster import Cluster
from mailstack_infra.database import Database, DatabaseArgs
from mailstack_infra.firewall import GATEWAY_PORT, Firewall, FirewallArgs
from mailstack_infra.iam import Statement
from mailstack_infra.jobs import JobNetwork, ScheduledJob, ScheduledJobArgs
from mailstack_infra.load_balancer import LoadBalancer, LoadBalancerArgs
from mailstack_infra.network import Network, NetworkArgs
from mailstack_infra.observability import AlarmTopic, AlarmTopicArgs, Threshold, alarm
from mailstack_infra.provider import aws_provider
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

# The gateway's count of republished (stranded) emails, from its `outbox.republished` events.
REPUBLISHED_METRIC = "EmailsRepublished"

PROCESSOR_HEALTH_PORT = 9101
CLEANUP_HANDLER = "mailstack_jobs.cleanup.handler"
RETRY_HANDLER = "mailstack_jobs.retry.handler"


@dataclass(frozen=True)
class Account:
    """Facts about the account and region the stack deploys into."""

    account_id: str
    partition: str
    region: str


def build_stack(config: StackConfig, jobs_code: pulumi.Archive) -> dict[str, pulumi.Input[object]]:
    """Declare every resource of one stack and return its outputs."""
    provider = aws_provider(config)
    invoke = pulumi.InvokeOptions(provider=provider)
    account = Account(
        account_id=aws.get_caller_identity(opts=invoke).account_id,
        partition=aws.get_partition(opts=invoke).partition,
        region=config.region,
    )
    top = pulumi.ResourceOptions(providers={"aws": provider})
    prefix = config.prefix

    alarms = AlarmTopic("alarms", AlarmTopicArgs(prefix=prefix, email=config.alarm_email), top)
    secrets = Secrets(
        "secrets",
        SecretsArgs(
            prefix=prefix,
            recovery_window_days=30 if config.deletion_protection else 7,
            elasticemail_api_key=config.elasticemail_api_key,
            sendgrid_api_key=config.sendgrid_api_key,
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
                partition=account.partition,
                network=job_network,
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
        description="Archives emails past the retention window to S3, then deletes them",
        handler=CLEANUP_HANDLER,
        timeout_seconds=900,
        memory_mb=512,
        schedule=config.cleanup_schedule,
        environment={
            "DATABASE_URL_SECRET_ARN": secrets.database_url.arn,
            "ARCHIVE_BUCKET": archive.bucket.bucket,
            "RETENTION_DAYS": str(config.retention_days),
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
        },
        statements=[
            read_database_url,
            Statement(actions=["sqs:SendMessage"], resources=[queue.queue.arn]),
        ],
    )
    outputs["cleanup_function"] = cleanup.function.name
    outputs["retry_function"] = retry.function.name
    return outputs


def _build_application(
    config: StackConfig,
    account: Account,
    provider: aws.Provider,
    alarms: AlarmTopic,
    secrets: Secrets,
    queue: EmailQueue,
    attachments: PrivateBucket,
) -> tuple[JobNetwork, dict[str, pulumi.Input[object]]]:
    """The AWS-only part: network, ALB, Postgres, the image registry and both services."""
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
            elb_account_arn=aws.elb.get_service_account(opts=invoke).arn,
            alarm_topic_arn=alarms.topic.arn,
        ),
        top,
    )
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
        ),
        top,
    )
    secrets.set_database_urls("rds", database.url, database.read_url)
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
            secret_recovery_window_days=30 if config.deletion_protection else 7,
            alarm_topic_arn=alarms.topic.arn,
        ),
        top,
    )

    registry = ImageRegistry(
        "images", ImageRegistryArgs(prefix=prefix, images=["gateway", "processor"]), top
    )
    cluster = Cluster("ecs", prefix, top)

    def service(
        name: str,
        *,
        image_tag: str,
        security_group_id: pulumi.Input[str],
        environment: dict[str, pulumi.Input[str]],
        secret_arns: dict[str, pulumi.Input[str]],
        health_check_url: str,
        statements: list[Statement],
        scaling_policies: list[ScalingPolicy],
        port: int | None = None,
        target_group: TargetGroupAttachment | None = None,
        depends_on: list[pulumi.Resource] | None = None,
    ) -> FargateService:
        return FargateService(
            name,
            FargateServiceArgs(
                prefix=prefix,
                cluster_arn=cluster.cluster.arn,
                cluster_name=cluster.cluster.name,
                image=registry.image(name, image_tag),
                repository_arn=registry.repositories[name].arn,
                sizing=config.gateway if name == "gateway" else config.processor,
                region=config.region,
                account_id=account.account_id,
                subnet_ids=network.app_subnet_ids,
                security_group_id=security_group_id,
                environment=environment,
                secrets=secret_arns,
                health_check_url=health_check_url,
                task_role_statements=statements,
                log_retention_days=config.log_retention_days,
                alarm_topic_arn=alarms.topic.arn,
                port=port,
                target_group=target_group,
                scaling_policies=scaling_policies,
                depends_on=[database, *(depends_on or [])],
            ),
            top,
        )

    gateway = service(
        "gateway",
        image_tag=config.gateway_image_tag,
        security_group_id=firewall.gateway.id,
        environment={
            "EMAIL_QUEUE_URL": queue.queue.url,
            "ATTACHMENTS_BUCKET": attachments.bucket.bucket,
            "AWS_REGION": config.region,
            "GATEWAY_HOST": "0.0.0.0",  # noqa: S104  # inside the task; the SG admits only the ALB
            "GATEWAY_PORT": str(GATEWAY_PORT),
            **rate_limit_environment(config.rate_limits),
            **jwt_environment(config.jwt),
        },
        secret_arns={
            "DATABASE_URL": secrets.database_url.arn,
            "DATABASE_READ_URL": secrets.database_read_url.arn,
            # The URL carries the AUTH token, so the whole URL is a secret.
            "REDIS_URL": cache.url_secret.arn,
        },
        health_check_url=f"http://127.0.0.1:{GATEWAY_PORT}/healthz",
        statements=[
            Statement(actions=["sqs:SendMessage"], resources=[queue.queue.arn]),
            # Stores a new email's attachments before the email commits; never reads them.
            Statement(
                actions=["s3:PutObject"],
                resources=[pulumi.Output.concat(attachments.bucket.arn, "/*")],
            ),
        ],
        port=GATEWAY_PORT,
        target_group=TargetGroupAttachment(
            target_group_arn=load_balancer.target_group.arn,
            container_port=GATEWAY_PORT,
            listeners=load_balancer.listeners,
        ),
        # Tasks start once the URL is in its secret (the gateway fails open without Redis, but
        # ECS cannot start a task whose secret has no value).
        depends_on=[cache],
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
        topic_arn=alarms.topic.arn,
        parent=gateway,
    )
    processor_name = f"{prefix}-processor"
    processor = service(
        "processor",
        image_tag=config.processor_image_tag,
        security_group_id=firewall.processor.id,
        environment={
            "EMAIL_QUEUE_URL": queue.queue.url,
            "ATTACHMENTS_BUCKET": attachments.bucket.bucket,
            "AWS_REGION": config.region,
            "ELASTICEMAIL_BASE_URL": "https://api.elasticemail.com",
            "SENDGRID_BASE_URL": "https://api.sendgrid.com",
            "PROVIDER_TIMEOUT_SECONDS": "3",
            "PROCESSOR_HEALTH_PORT": str(PROCESSOR_HEALTH_PORT),
        },
        secret_arns={
            "DATABASE_URL": secrets.database_url.arn,
            "ELASTICEMAIL_API_KEY": secrets.elasticemail_api_key.arn,
            "SENDGRID_API_KEY": secrets.sendgrid_api_key.arn,
        },
        health_check_url=f"http://127.0.0.1:{PROCESSOR_HEALTH_PORT}/healthz",
        statements=[
            Statement(
                actions=[
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                ],
                resources=[queue.queue.arn],
            ),
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
                    queue.queue.name, cluster.cluster.name, processor_name
                ),
            )
        ],
    )

    outputs: dict[str, pulumi.Input[object]] = {
        "vpc_id": network.vpc.id,
        "load_balancer_dns_name": load_balancer.alb.dns_name,
        "gateway_url": pulumi.Output.concat(
            "https://" if config.certificate_arn else "http://", load_balancer.alb.dns_name
        ),
        "gateway_repository_url": registry.repositories["gateway"].repository_url,
        "processor_repository_url": registry.repositories["processor"].repository_url,
        "cluster_name": cluster.cluster.name,
        "gateway_service": gateway.service.name,
        "processor_service": processor.service.name,
        "database_endpoint": database.primary.endpoint,
        "database_replica_endpoints": [replica.endpoint for replica in database.replicas],
        "cache_endpoint": cache.replication_group.primary_endpoint_address,
        "redis_url_secret_arn": cache.url_secret.arn,
    }
    return JobNetwork(network.app_subnet_ids, firewall.jobs.id), outputs


def rate_limit_environment(limits: RateLimitSettings) -> dict[str, pulumi.Input[str]]:
    """The gateway's per-credential defaults and API-key caching, as the gateway reads them."""
    return {
        "RATE_LIMIT_SEND_PER_MINUTE": str(limits.send_per_minute),
        "RATE_LIMIT_READ_PER_MINUTE": str(limits.read_per_minute),
        "AUTH_CACHE_SECONDS": str(limits.auth_cache_seconds),
        "API_KEY_LAST_USED_FLUSH_SECONDS": str(limits.api_key_last_used_flush_seconds),
    }


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
