"""Database migrations as a step of `pulumi up`: a one-off ECS task from the gateway image,
run (and waited for) by a Lambda the program invokes before the services change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from mailstack_infra import migration_runner
from mailstack_infra.iam import Statement, policy_document, trust_policy
from mailstack_infra.service import SCRATCH_VOLUME, container_definition, task_execution_role

# What the task runs: the shared library's Alembic upgrade to head, then the app user's role
# and grants (APP_DATABASE_URL names the user and its password).
MIGRATE_COMMAND = ["python", "-m", "mailstack_core.migrate"]
# The variables the task's two secrets become: the master's URL, and the app user's to create.
MASTER_URL_VARIABLE = "DATABASE_URL"
APP_URL_VARIABLE = "APP_DATABASE_URL"
RUNNER_SOURCE = Path(migration_runner.__file__)


@dataclass(frozen=True)
class MigrationArgs:
    """What the migration step needs to know."""

    prefix: str
    cluster_arn: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    image: pulumi.Input[str]
    repository_arn: pulumi.Input[str]
    cpu_architecture: str
    region: str
    account_id: pulumi.Input[str]
    partition: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    # MASTER_URL_VARIABLE and APP_URL_VARIABLE to their secrets' ARNs.
    secrets: Mapping[str, pulumi.Input[str]]
    environment: Mapping[str, pulumi.Input[str]]
    runtime: str
    log_retention_days: int


class Migration(pulumi.ComponentResource):
    """The migration task definition, the Lambda that runs it, and its invocation.

    The invocation runs again whenever the task definition changes (a new image digest), and
    `depends_on=[migration]` holds the services back until it succeeded: new tasks never take
    traffic on a schema older than their code.
    """

    task_definition: aws.ecs.TaskDefinition
    invocation: aws.lambda_.Invocation
    log_group: aws.cloudwatch.LogGroup

    def __init__(
        self, name: str, args: MigrationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:database:Migration", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        family = f"{args.prefix}-{name}"

        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/{args.prefix}/ecs/{name}",
            retention_in_days=args.log_retention_days,
            opts=child,
        )
        execution_role = task_execution_role(
            name,
            account_id=args.account_id,
            repository_arn=args.repository_arn,
            log_group=self.log_group,
            secret_arns=list(args.secrets.values()),
            parent=self,
        )
        container = container_definition(
            migration_runner.CONTAINER,
            image=args.image,
            environment=args.environment,
            secrets=args.secrets,
            log_group_name=self.log_group.name,
            region=args.region,
            command=MIGRATE_COMMAND,
        )
        self.task_definition = aws.ecs.TaskDefinition(
            f"{name}-task",
            family=family,
            cpu="256",
            memory="512",
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                operating_system_family="LINUX", cpu_architecture=args.cpu_architecture
            ),
            execution_role_arn=execution_role.arn,
            volumes=[aws.ecs.TaskDefinitionVolumeArgs(name=SCRATCH_VOLUME)],
            container_definitions=pulumi.Output.json_dumps([container]),
            opts=child,
        )

        function = self._runner(name, args, execution_role)
        self.invocation = aws.lambda_.Invocation(
            f"{name}-run",
            function_name=function.name,
            input=pulumi.Output.json_dumps(
                {
                    "cluster": args.cluster_arn,
                    "taskDefinition": self.task_definition.arn,
                    "subnets": list(args.subnet_ids),
                    "securityGroups": [args.security_group_id],
                }
            ),
            # A new revision (image, command, secrets) is a new migration run.
            triggers={"taskDefinition": self.task_definition.arn},
            opts=child,
        )
        self.register_outputs(
            {"task_definition_arn": self.task_definition.arn, "log_group": self.log_group.name}
        )

    def _runner(
        self, name: str, args: MigrationArgs, execution_role: aws.iam.Role
    ) -> aws.lambda_.Function:
        """The Lambda that starts the task and waits: outside the VPC, it calls ECS only."""
        child = pulumi.ResourceOptions(parent=self)
        logs = aws.cloudwatch.LogGroup(
            f"{name}-runner-logs",
            name=f"/{args.prefix}/lambda/{name}-runner",
            retention_in_days=args.log_retention_days,
            opts=child,
        )
        role = aws.iam.Role(
            f"{name}-runner",
            assume_role_policy=trust_policy("lambda.amazonaws.com"),
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-runner",
            role=role.id,
            policy=policy_document(
                [
                    Statement(
                        actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                        resources=[pulumi.Output.concat(logs.arn, ":*")],
                    ),
                    Statement(
                        actions=["ecs:RunTask"],
                        resources=[self.task_definition.arn],
                        conditions={"ArnEquals": {"ecs:cluster": args.cluster_arn}},
                    ),
                    Statement(
                        actions=["ecs:DescribeTasks"],
                        resources=[
                            pulumi.Output.concat(
                                "arn:",
                                args.partition,
                                ":ecs:",
                                args.region,
                                ":",
                                args.account_id,
                                ":task/",
                                args.cluster_name,
                                "/*",
                            )
                        ],
                    ),
                    Statement(
                        actions=["iam:PassRole"],
                        resources=[execution_role.arn],
                        conditions={
                            "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
                        },
                    ),
                ]
            ),
            opts=child,
        )
        return aws.lambda_.Function(
            f"{name}-runner",
            name=f"{args.prefix}-{name}-runner",
            description="Runs the migration task and waits for it (invoked by pulumi up)",
            role=role.arn,
            runtime=args.runtime,
            handler=f"{RUNNER_SOURCE.stem}.handler",
            code=pulumi.AssetArchive({RUNNER_SOURCE.name: pulumi.FileAsset(str(RUNNER_SOURCE))}),
            timeout=900,
            memory_size=128,
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="JSON", log_group=logs.name
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
