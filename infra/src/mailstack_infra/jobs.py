"""A scheduled Lambda job (cleanup, retry): function, role, logs, schedule and error alarm."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mailstack_infra.iam import Statement, policy_document, trust_policy
from mailstack_infra.observability import Threshold, alarm


@dataclass(frozen=True)
class JobNetwork:
    """The private subnets and security group a job runs in (absent on LocalStack)."""

    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]


@dataclass(frozen=True)
class ScheduledJobArgs:
    """What one scheduled job needs to know."""

    prefix: str
    description: str
    handler: str
    code: pulumi.Archive
    runtime: str
    timeout_seconds: int
    memory_mb: int
    schedule: str
    environment: Mapping[str, pulumi.Input[str]]
    statements: Sequence[Statement]
    log_retention_days: int
    alarm_topic_arn: pulumi.Input[str]
    # What the role needs to publish a failed run to the alarm topic (topic and its key).
    alarm_statements: Sequence[Statement]
    partition: pulumi.Input[str]
    network: JobNetwork | None = None
    max_retries: int = 2
    # None: no reservation (a new account's quota of 10 has none to spare).
    reserved_concurrency: int | None = None
    # Off until the schema exists (the first deployment, before the images are pushed).
    schedule_enabled: bool = True


class ScheduledJob(pulumi.ComponentResource):
    """A Lambda on a cron schedule that reports failed and throttled runs."""

    function: aws.lambda_.Function
    role: aws.iam.Role
    log_group: aws.cloudwatch.LogGroup
    rule: aws.cloudwatch.EventRule

    def __init__(
        self, name: str, args: ScheduledJobArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:jobs:ScheduledJob", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        function_name = f"{args.prefix}-{name}"

        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/{args.prefix}/lambda/{name}",
            retention_in_days=args.log_retention_days,
            opts=child,
        )
        self.role = aws.iam.Role(
            f"{name}-role", assume_role_policy=trust_policy("lambda.amazonaws.com"), opts=child
        )
        statements = [
            Statement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[pulumi.Output.concat(self.log_group.arn, ":*")],
            ),
            *args.alarm_statements,
            *args.statements,
        ]
        policy = aws.iam.RolePolicy(
            f"{name}-role", role=self.role.id, policy=policy_document(statements), opts=child
        )
        depends_on: list[pulumi.Resource] = [policy]
        if args.network is not None:
            # ENI management for VPC Lambdas; AWS requires these actions on every resource.
            depends_on.append(
                aws.iam.RolePolicyAttachment(
                    f"{name}-vpc-access",
                    role=self.role.name,
                    policy_arn=pulumi.Output.concat(
                        "arn:",
                        args.partition,
                        ":iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
                    ),
                    opts=child,
                )
            )

        self.function = aws.lambda_.Function(
            f"{name}-function",
            name=function_name,
            description=args.description,
            role=self.role.arn,
            runtime=args.runtime,
            handler=args.handler,
            code=args.code,
            timeout=args.timeout_seconds,
            memory_size=args.memory_mb,
            # Overlapping runs are safe (each locks its rows, SKIP LOCKED); reserving even one
            # unit fails in an account whose quota leaves no 100 unreserved.
            reserved_concurrent_executions=args.reserved_concurrency,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=dict(args.environment)),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="JSON", log_group=self.log_group.name
            ),
            vpc_config=(
                aws.lambda_.FunctionVpcConfigArgs(
                    subnet_ids=list(args.network.subnet_ids),
                    security_group_ids=[args.network.security_group_id],
                )
                if args.network is not None
                else None
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-invoke",
            function_name=self.function.name,
            maximum_retry_attempts=args.max_retries,
            maximum_event_age_in_seconds=3600,
            destination_config=aws.lambda_.FunctionEventInvokeConfigDestinationConfigArgs(
                on_failure=aws.lambda_.FunctionEventInvokeConfigDestinationConfigOnFailureArgs(
                    destination=args.alarm_topic_arn
                )
            ),
            opts=child,
        )

        self.rule = aws.cloudwatch.EventRule(
            f"{name}-schedule",
            name=f"{function_name}-schedule",
            description=f"Runs {function_name}",
            schedule_expression=args.schedule,
            state="ENABLED" if args.schedule_enabled else "DISABLED",
            opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-schedule",
            rule=self.rule.name,
            arn=self.function.arn,
            opts=child,
        )
        aws.lambda_.Permission(
            f"{name}-schedule",
            action="lambda:InvokeFunction",
            function=self.function.name,
            principal="events.amazonaws.com",
            source_arn=self.rule.arn,
            opts=child,
        )

        for metric, what in (("Errors", "failed"), ("Throttles", "was throttled")):
            alarm(
                f"{name}-{metric.lower()}",
                description=f"{function_name} {what}",
                namespace="AWS/Lambda",
                metric=metric,
                dimensions={"FunctionName": self.function.name},
                when=Threshold(0, statistic="Sum", evaluation_periods=1),
                topic_arn=args.alarm_topic_arn,
                parent=self,
            )

        self.register_outputs(
            {"function_name": self.function.name, "schedule": self.rule.schedule_expression}
        )
