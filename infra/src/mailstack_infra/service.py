"""One Fargate service: task definition, roles, logs, ECS service, autoscaling and alarms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from mailstack_infra.iam import Statement, policy_document, trust_policy
from mailstack_infra.observability import Threshold, alarm
from mailstack_infra.settings import ServiceSizing
from mailstack_infra.sidecars import (
    COLLECTOR_IMAGE,
    CONTAINER_USER,
    LOG_ROUTER_CONTAINER,
    METRICS_CONTAINER,
    SCRAPE_KEY_VARIABLE,
    DatadogLogs,
    datadog_log_configuration,
    log_router,
    metrics_collector,
)

_scaling = aws.appautoscaling
TrackingMetric = (
    _scaling.PolicyTargetTrackingScalingPolicyConfigurationCustomizedMetricSpecificationArgs
)
PredefinedMetric = (
    _scaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs
)
TrackingConfiguration = _scaling.PolicyTargetTrackingScalingPolicyConfigurationArgs

SCRATCH_VOLUME = "tmp"


@dataclass(frozen=True)
class ScalingPolicy:
    """A target-tracking policy: a predefined metric (with its label) or a customized one."""

    name: str
    target_value: float
    predefined_metric: str | None = None
    resource_label: pulumi.Input[str] | None = None
    customized_metric: TrackingMetric | None = None


@dataclass(frozen=True)
class TargetGroupAttachment:
    """The target group the service registers its tasks in, and what must exist first."""

    target_group_arn: pulumi.Input[str]
    container_port: int
    listeners: Sequence[pulumi.Resource]


@dataclass(frozen=True)
class FargateServiceArgs:
    """What one Fargate service needs to know."""

    prefix: str
    cluster_arn: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    image: pulumi.Input[str]
    repository_arn: pulumi.Input[str]
    sizing: ServiceSizing
    cpu_architecture: str
    region: str
    account_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    environment: Mapping[str, pulumi.Input[str]]
    secrets: Mapping[str, pulumi.Input[str]]
    health_check_url: str
    task_role_statements: Sequence[Statement]
    log_retention_days: int
    alarm_topic_arn: pulumi.Input[str]
    port: int | None = None
    target_group: TargetGroupAttachment | None = None
    scaling_policies: Sequence[ScalingPolicy] = field(default_factory=list)
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)
    # The port of the app's Prometheus /metrics: a collector sidecar writes them to CloudWatch
    # (mailstack:prometheusToCloudWatch). None: no collector.
    metrics_port: int | None = None
    # The secret holding the bearer key the collector scrapes with (the gateway's /metrics).
    metrics_api_key_arn: pulumi.Input[str] | None = None
    collector_image: str = COLLECTOR_IMAGE
    # The app's logs to Datadog through a FireLens log router (None: to CloudWatch).
    datadog: DatadogLogs | None = None
    # The container's command, replacing the image's (e.g. the dispatcher, in the processor's).
    command: Sequence[str] | None = None


def task_execution_role(
    name: str,
    *,
    account_id: pulumi.Input[str],
    repository_arn: pulumi.Input[str],
    log_group: aws.cloudwatch.LogGroup,
    secret_arns: Sequence[pulumi.Input[str]],
    parent: pulumi.Resource,
) -> aws.iam.Role:
    """The role ECS starts a task with: pull its image, write its logs, read its secrets."""
    child = pulumi.ResourceOptions(parent=parent)
    role = aws.iam.Role(
        f"{name}-execution",
        assume_role_policy=trust_policy("ecs-tasks.amazonaws.com", source_account=account_id),
        opts=child,
    )
    statements = [
        # ECR issues registry tokens account-wide; the action cannot be scoped further.
        Statement(actions=["ecr:GetAuthorizationToken"], resources=["*"]),
        Statement(
            actions=[
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
            ],
            resources=[repository_arn],
        ),
        Statement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[pulumi.Output.concat(log_group.arn, ":*")],
        ),
    ]
    if secret_arns:
        statements.append(
            Statement(actions=["secretsmanager:GetSecretValue"], resources=list(secret_arns))
        )
    aws.iam.RolePolicy(
        f"{name}-execution", role=role.id, policy=policy_document(statements), opts=child
    )
    return role


def health_check_command(url: str) -> list[str]:
    """A container health check that needs nothing but the Python the image already has."""
    probe = f"import urllib.request; urllib.request.urlopen('{url}', timeout=3)"
    return ["CMD", "python", "-c", probe]


class FargateService(pulumi.ComponentResource):
    """A private Fargate service: read-only, non-root, logged, rolled back on failed deploys."""

    service: aws.ecs.Service
    task_definition: aws.ecs.TaskDefinition
    execution_role: aws.iam.Role
    task_role: aws.iam.Role
    log_group: aws.cloudwatch.LogGroup
    scaling_target: aws.appautoscaling.Target

    def __init__(
        self,
        name: str,
        args: FargateServiceArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("mailstack:containers:FargateService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        service_name = f"{args.prefix}-{name}"

        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/{args.prefix}/ecs/{name}",
            retention_in_days=args.log_retention_days,
            opts=child,
        )

        ecs_trust = trust_policy("ecs-tasks.amazonaws.com", source_account=args.account_id)
        self.execution_role = task_execution_role(
            name,
            account_id=args.account_id,
            repository_arn=args.repository_arn,
            log_group=self.log_group,
            secret_arns=[
                *args.secrets.values(),
                *self._collector_secrets(args).values(),
                # FireLens reads the Datadog key (the log configuration's secretOptions).
                *([args.datadog.api_key_secret_arn] if args.datadog else []),
            ],
            parent=self,
        )

        self.task_role = aws.iam.Role(f"{name}-task", assume_role_policy=ecs_trust, opts=child)
        task_role_statements = list(args.task_role_statements)
        if args.metrics_port is not None:
            # The collector writes its embedded metrics to the service's own log group.
            task_role_statements.append(
                Statement(
                    actions=[
                        "logs:CreateLogStream",
                        "logs:DescribeLogStreams",
                        "logs:PutLogEvents",
                    ],
                    resources=[pulumi.Output.concat(self.log_group.arn, ":*")],
                )
            )
        if task_role_statements:
            aws.iam.RolePolicy(
                f"{name}-task",
                role=self.task_role.id,
                policy=policy_document(task_role_statements),
                opts=child,
            )

        self.task_definition = aws.ecs.TaskDefinition(
            f"{name}-task",
            family=service_name,
            cpu=str(args.sizing.cpu),
            memory=str(args.sizing.memory),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            # The images must be built for this architecture (docker build --platform).
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                operating_system_family="LINUX", cpu_architecture=args.cpu_architecture
            ),
            execution_role_arn=self.execution_role.arn,
            task_role_arn=self.task_role.arn,
            volumes=[aws.ecs.TaskDefinitionVolumeArgs(name=SCRATCH_VOLUME)],
            container_definitions=pulumi.Output.json_dumps(self._containers(name, args)),
            opts=child,
        )

        load_balancers = []
        depends_on = list(args.depends_on)
        if args.target_group is not None:
            load_balancers.append(
                aws.ecs.ServiceLoadBalancerArgs(
                    target_group_arn=args.target_group.target_group_arn,
                    container_name=name,
                    container_port=args.target_group.container_port,
                )
            )
            # The target group must be attached to a listener before a service may use it.
            depends_on.extend(args.target_group.listeners)

        self.service = aws.ecs.Service(
            f"{name}-service",
            name=service_name,
            cluster=args.cluster_arn,
            task_definition=self.task_definition.arn,
            launch_type="FARGATE",
            platform_version="LATEST",
            desired_count=args.sizing.min_tasks,
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(
                enable=True, rollback=True
            ),
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=list(args.subnet_ids),
                security_groups=[args.security_group_id],
                assign_public_ip=False,
            ),
            load_balancers=load_balancers,
            health_check_grace_period_seconds=30 if load_balancers else None,
            propagate_tags="SERVICE",
            enable_ecs_managed_tags=True,
            wait_for_steady_state=False,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=depends_on,
                # Autoscaling owns the task count once the service exists.
                ignore_changes=["desiredCount"],
            ),
        )

        self.scaling_target = aws.appautoscaling.Target(
            f"{name}-scaling",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat("service/", args.cluster_name, "/", self.service.name),
            min_capacity=args.sizing.min_tasks,
            max_capacity=args.sizing.max_tasks,
            opts=child,
        )
        for policy in args.scaling_policies:
            predefined = None
            if policy.predefined_metric is not None:
                predefined = PredefinedMetric(
                    predefined_metric_type=policy.predefined_metric,
                    resource_label=policy.resource_label,
                )
            aws.appautoscaling.Policy(
                f"{name}-{policy.name}",
                name=f"{service_name}-{policy.name}",
                policy_type="TargetTrackingScaling",
                service_namespace=self.scaling_target.service_namespace,
                scalable_dimension=self.scaling_target.scalable_dimension,
                resource_id=self.scaling_target.resource_id,
                target_tracking_scaling_policy_configuration=TrackingConfiguration(
                    target_value=policy.target_value,
                    predefined_metric_specification=predefined,
                    customized_metric_specification=policy.customized_metric,
                    scale_in_cooldown=120,
                    scale_out_cooldown=60,
                ),
                opts=child,
            )

        self._alarms(name, service_name, args)
        self.register_outputs(
            {
                "service_name": self.service.name,
                "task_definition_arn": self.task_definition.arn,
                "log_group": self.log_group.name,
            }
        )

    def _alarms(self, name: str, service_name: str, args: FargateServiceArgs) -> None:
        """CPU and memory; fewer tasks running than the minimum; a deployment ECS gave up on."""
        dimensions = {"ClusterName": args.cluster_name, "ServiceName": self.service.name}
        for metric, label in (("CPUUtilization", "cpu"), ("MemoryUtilization", "memory")):
            alarm(
                f"{name}-{label}",
                description=f"{service_name} {label} above 80% for 15 minutes",
                namespace="AWS/ECS",
                metric=metric,
                dimensions=dimensions,
                when=Threshold(80),
                topic_arn=args.alarm_topic_arn,
                parent=self,
            )
        alarm(
            f"{name}-running-tasks",
            description=(
                f"{service_name} runs fewer than its {args.sizing.min_tasks} tasks for 5 minutes "
                "(tasks crash, fail health checks or cannot start)"
            ),
            namespace="ECS/ContainerInsights",
            metric="RunningTaskCount",
            dimensions=dimensions,
            when=Threshold(
                args.sizing.min_tasks,
                statistic="Minimum",
                comparison="LessThanThreshold",
                period=60,
                evaluation_periods=5,
                # No data: the service or its metrics are gone, which is no better.
                missing_data="breaching",
            ),
            topic_arn=args.alarm_topic_arn,
            parent=self,
        )
        # A deployment the circuit breaker stopped (and rolled back) is an event, not a metric.
        rule = aws.cloudwatch.EventRule(
            f"{name}-deployment-failed",
            name=f"{service_name}-deployment-failed",
            description=f"A deployment of {service_name} failed and was rolled back",
            event_pattern=pulumi.Output.json_dumps(
                {
                    "source": ["aws.ecs"],
                    "detail-type": ["ECS Deployment State Change"],
                    "resources": [self.service.id],
                    "detail": {"eventName": ["SERVICE_DEPLOYMENT_FAILED"]},
                }
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.cloudwatch.EventTarget(
            f"{name}-deployment-failed",
            rule=rule.name,
            arn=args.alarm_topic_arn,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _containers(self, name: str, args: FargateServiceArgs) -> list[dict[str, Any]]:
        app = container_definition(
            name,
            image=args.image,
            environment=args.environment,
            secrets=args.secrets,
            log_group_name=self.log_group.name,
            region=args.region,
            port=args.port,
            health_check_url=args.health_check_url,
            command=args.command,
        )
        containers = [app]
        if args.datadog is not None:
            app["logConfiguration"] = datadog_log_configuration(
                f"{args.prefix}-{name}", args.datadog
            )
            # The router must be up before the app writes its first line.
            app["dependsOn"] = [{"containerName": LOG_ROUTER_CONTAINER, "condition": "START"}]
            containers.append(
                log_router(
                    args.datadog,
                    awslogs(self.log_group.name, args.region, LOG_ROUTER_CONTAINER),
                )
            )
        if args.metrics_port is not None:
            containers.append(
                metrics_collector(
                    f"{args.prefix}-{name}",
                    image=args.collector_image,
                    port=args.metrics_port,
                    log_group_name=self.log_group.name,
                    region=args.region,
                    log_configuration=awslogs(self.log_group.name, args.region, METRICS_CONTAINER),
                    secrets=self._collector_secrets(args),
                )
            )
        return containers

    @staticmethod
    def _collector_secrets(args: FargateServiceArgs) -> dict[str, pulumi.Input[str]]:
        if args.metrics_port is None or args.metrics_api_key_arn is None:
            return {}
        return {SCRAPE_KEY_VARIABLE: args.metrics_api_key_arn}


def awslogs(group: pulumi.Input[str], region: str, stream_prefix: str) -> dict[str, Any]:
    """A container's logs to its service's CloudWatch log group."""
    return {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": group,
            "awslogs-region": region,
            "awslogs-stream-prefix": stream_prefix,
        },
    }


def container_definition(
    name: str,
    *,
    image: pulumi.Input[str],
    environment: Mapping[str, pulumi.Input[str]],
    secrets: Mapping[str, pulumi.Input[str]],
    log_group_name: pulumi.Input[str],
    region: str,
    port: int | None = None,
    health_check_url: str | None = None,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A read-only, non-root container logging to its group, secrets as `valueFrom` ARNs.

    Every field ECS would otherwise fill in with a default is spelled out, so the stored
    definition equals the declared one and `pulumi up` does not replace it each time.
    """
    port_mappings = (
        [] if port is None else [{"containerPort": port, "hostPort": port, "protocol": "tcp"}]
    )
    definition: dict[str, Any] = {
        "name": name,
        "image": image,
        "essential": True,
        "cpu": 0,
        "user": CONTAINER_USER,
        "readonlyRootFilesystem": True,
        "portMappings": port_mappings,
        "environment": [
            {"name": key, "value": value} for key, value in sorted(environment.items())
        ],
        "secrets": [{"name": key, "valueFrom": arn} for key, arn in sorted(secrets.items())],
        "mountPoints": [
            # The only writable path: a task-local scratch volume, the root fs stays read-only.
            {"sourceVolume": SCRATCH_VOLUME, "containerPath": "/tmp", "readOnly": False}  # noqa: S108
        ],
        "volumesFrom": [],
        "systemControls": [],
        "logConfiguration": awslogs(log_group_name, region, name),
    }
    if command is not None:
        definition["command"] = list(command)
    if health_check_url is not None:
        definition["healthCheck"] = {
            "command": health_check_command(health_check_url),
            "interval": 30,
            "timeout": 5,
            "retries": 3,
            "startPeriod": 30,
        }
    return definition
