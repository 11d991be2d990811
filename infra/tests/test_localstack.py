"""The localstack stack: only what LocalStack's free runtime offers, through a local provider."""

from __future__ import annotations

import json

from mailstack_infra.mocks import StackRecord

UNAVAILABLE = (
    "aws:ecs/",
    "aws:ecr/",
    "aws:rds/",
    "aws:lb/",
    "aws:alb/",
    "aws:elb",
    "aws:appautoscaling/",
    "aws:ec2/",
)


def test_registers_no_ecs_ecr_rds_elb_autoscaling_or_vpc(localstack: StackRecord) -> None:
    offending = [r.type for r in localstack if r.type.startswith(UNAVAILABLE)]
    assert offending == []


def test_deploys_queues_bucket_secrets_jobs_schedules_and_log_groups(
    localstack: StackRecord,
) -> None:
    types = {r.type for r in localstack}
    for expected in (
        "aws:sqs/queue:Queue",
        "aws:s3/bucket:Bucket",
        "aws:secretsmanager/secret:Secret",
        "aws:iam/role:Role",
        "aws:lambda/function:Function",
        "aws:cloudwatch/eventRule:EventRule",
        "aws:cloudwatch/logGroup:LogGroup",
    ):
        assert expected in types
    assert len(localstack.of_type("aws:lambda/function:Function")) == 2
    assert all(
        "vpcConfig" not in f.inputs for f in localstack.of_type("aws:lambda/function:Function")
    )


def test_provider_points_at_localstack_with_the_skip_flags(localstack: StackRecord) -> None:
    (provider,) = localstack.of_type("pulumi:providers:aws")
    inputs = provider.inputs
    for flag in (
        "skipCredentialsValidation",
        "skipRequestingAccountId",
        "skipMetadataApiCheck",
        "s3UsePathStyle",
    ):
        assert str(inputs[flag]).lower() == "true", flag
    assert inputs["accessKey"] == "test"
    assert inputs["secretKey"] == "test"
    endpoints = inputs["endpoints"]
    (endpoints,) = json.loads(endpoints) if isinstance(endpoints, str) else endpoints
    for service in (
        "sqs",
        "s3",
        "secretsmanager",
        "iam",
        "kms",
        "sts",
        "lambda",
        "events",
        "logs",
        "cloudwatch",
        "sns",
    ):
        assert endpoints[service] == "http://localhost:4566", service


def test_aws_stacks_use_the_real_endpoints(dev: StackRecord) -> None:
    (provider,) = dev.of_type("pulumi:providers:aws")
    assert "endpoints" not in provider.inputs
    assert "accessKey" not in provider.inputs


def test_every_service_the_stack_uses_is_sent_to_localstack(localstack: StackRecord) -> None:
    """A service without an endpoint goes to real AWS with the `test` keys (the alarm topic's
    KMS key did)."""
    (provider,) = localstack.of_type("pulumi:providers:aws")
    endpoints = provider.inputs["endpoints"]
    (endpoints,) = json.loads(endpoints) if isinstance(endpoints, str) else endpoints
    # The cloudwatch module holds alarms, EventBridge rules and log groups.
    apis = {"cloudwatch": {"cloudwatch", "events", "logs"}}
    modules = {r.type.split(":")[1].split("/")[0] for r in localstack if r.type.startswith("aws:")}
    for module in modules:
        for api in apis.get(module, {module}):
            assert endpoints.get(api) == "http://localhost:4566", api


def test_jobs_use_the_local_postgres(localstack: StackRecord) -> None:
    (version,) = [
        v
        for v in localstack.of_type("aws:secretsmanager/secretVersion:SecretVersion")
        if v.name == "local-database-url"
    ]
    assert (
        version.inputs["secretString"] == "postgresql+psycopg://postgres@127.0.0.1:5432/mailstack"
    )
