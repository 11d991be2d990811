"""Checklist rows: the cleanup and retry Lambdas and their schedules."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from mailstack_infra.mocks import StackRecord

FUNCTION = "aws:lambda/function:Function"
JOBS = ["cleanup", "retry"]


def statements(stack: StackRecord, job: str) -> list[dict[str, Any]]:
    policy = stack.one("aws:iam/rolePolicy:RolePolicy", f"{job}-role")
    return list(policy.json("policy")["Statement"])


def granted(stack: StackRecord, job: str, action: str) -> list[str]:
    return sorted(
        resource
        for statement in statements(stack, job)
        if action in statement["Action"]
        for resource in statement["Resource"]
    )


@pytest.mark.parametrize("job", JOBS)
def test_job_runs_in_the_private_subnets_behind_its_own_group(prod: StackRecord, job: str) -> None:
    vpc = prod.one(FUNCTION, f"{job}-function").inputs["vpcConfig"]
    app = sorted(
        s.id for s in prod.of_type("aws:ec2/subnet:Subnet") if s.inputs["tags"]["tier"] == "app"
    )
    assert sorted(vpc["subnetIds"]) == app
    assert vpc["securityGroupIds"] == [
        prod.one("aws:ec2/securityGroup:SecurityGroup", "firewall-jobs").id
    ]


@pytest.mark.parametrize("job", JOBS)
def test_job_reserves_no_concurrency_by_default(dev: StackRecord, job: str) -> None:
    """A new account's quota (10) leaves nothing to reserve: reserving 1 failed the deploy.
    Overlapping runs are safe, the jobs lock their rows (SKIP LOCKED)."""
    assert "reservedConcurrentExecutions" not in dev.one(FUNCTION, f"{job}-function").inputs


def test_job_concurrency_can_be_reserved_where_the_quota_allows(
    dev_reserving_concurrency: StackRecord,
) -> None:
    for job in JOBS:
        function = dev_reserving_concurrency.one(FUNCTION, f"{job}-function")
        assert function.inputs["reservedConcurrentExecutions"] == 1


@pytest.mark.parametrize("job", JOBS)
def test_job_logs_to_a_group_with_retention(dev: StackRecord, job: str) -> None:
    logging = dev.one(FUNCTION, f"{job}-function").inputs["loggingConfig"]
    group = dev.one("aws:cloudwatch/logGroup:LogGroup", f"{job}-logs").inputs
    assert logging["logGroup"] == group["name"]
    assert group["retentionInDays"] > 0


@pytest.mark.parametrize("job", JOBS)
def test_failed_runs_are_retried_then_reported(dev: StackRecord, job: str) -> None:
    config = dev.one(
        "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig", f"{job}-invoke"
    ).inputs
    topic = dev.one("aws:sns/topic:Topic", "alarms-topic").outputs["arn"]
    key = dev.one("aws:kms/key:Key", "alarms-key").outputs["arn"]
    assert config["functionName"] == dev.one(FUNCTION, f"{job}-function").outputs["name"]
    assert 0 < config["maximumRetryAttempts"] <= 2
    assert config["destinationConfig"]["onFailure"]["destination"] == topic
    assert granted(dev, job, "sns:Publish") == [topic]
    # The topic is encrypted with its own key: publishing needs the key as well.
    assert granted(dev, job, "kms:GenerateDataKey") == [key]
    assert granted(dev, job, "kms:Decrypt") == [key]


def test_cleanup_writes_only_to_the_archive_and_reads_only_the_database_secret(
    dev: StackRecord,
) -> None:
    bucket_arn = dev.one("aws:s3/bucket:Bucket", "archive").outputs["arn"]
    secret = dev.one("aws:secretsmanager/secret:Secret", "secrets-database-url").outputs["arn"]
    assert granted(dev, "cleanup", "s3:PutObject") == [f"{bucket_arn}/*"]
    assert granted(dev, "cleanup", "s3:ListBucket") == [bucket_arn]
    assert granted(dev, "cleanup", "secretsmanager:GetSecretValue") == [secret]


def test_retry_sends_only_to_the_email_queue(dev: StackRecord) -> None:
    queue_arn = dev.one("aws:sqs/queue:Queue", "email-queue-queue").outputs["arn"]
    assert granted(dev, "retry", "sqs:SendMessage") == [queue_arn]
    assert not granted(dev, "retry", "s3:PutObject")


def test_job_environment_and_handlers(dev: StackRecord) -> None:
    cleanup = dev.one(FUNCTION, "cleanup-function").inputs
    retry = dev.one(FUNCTION, "retry-function").inputs
    secret = dev.one("aws:secretsmanager/secret:Secret", "secrets-database-url").outputs["arn"]
    assert cleanup["handler"] == "mailstack_jobs.cleanup.handler"
    assert retry["handler"] == "mailstack_jobs.retry.handler"
    # The jobs connect through the proxy, whose certificate the runtime's own bundle verifies.
    assert cleanup["environment"]["variables"] == {
        "DATABASE_URL_SECRET_ARN": secret,
        "ARCHIVE_BUCKET": dev.one("aws:s3/bucket:Bucket", "archive").outputs["bucket"],
        "RETENTION_DAYS": "183",
        "WEBHOOK_EVENT_RETENTION_DAYS": "30",
        "PGSSLROOTCERT": "/etc/pki/tls/certs/ca-bundle.crt",
    }
    assert retry["environment"]["variables"] == {
        "DATABASE_URL_SECRET_ARN": secret,
        "EMAIL_QUEUE_URL": dev.one("aws:sqs/queue:Queue", "email-queue-queue").outputs["url"],
        "PGSSLROOTCERT": "/etc/pki/tls/certs/ca-bundle.crt",
    }


@pytest.mark.parametrize("job", JOBS)
def test_job_role_trusts_only_lambda(dev: StackRecord, job: str) -> None:
    trust = dev.one("aws:iam/role:Role", f"{job}-role").json("assumeRolePolicy")["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "lambda.amazonaws.com"}]


@pytest.mark.parametrize("job", JOBS)
def test_schedule_is_a_cron_rule_that_targets_the_function(dev: StackRecord, job: str) -> None:
    rule = dev.one("aws:cloudwatch/eventRule:EventRule", f"{job}-schedule")
    target = dev.one("aws:cloudwatch/eventTarget:EventTarget", f"{job}-schedule").inputs
    function = dev.one(FUNCTION, f"{job}-function")
    assert rule.inputs["scheduleExpression"].startswith("cron(")
    assert target["rule"] == rule.outputs["name"]
    assert target["arn"] == function.outputs["arn"]


@pytest.mark.parametrize("job", JOBS)
def test_only_the_schedule_rule_may_invoke_the_function(dev: StackRecord, job: str) -> None:
    permission = dev.one("aws:lambda/permission:Permission", f"{job}-schedule").inputs
    assert permission["principal"] == "events.amazonaws.com"
    assert permission["action"] == "lambda:InvokeFunction"
    assert permission["function"] == dev.one(FUNCTION, f"{job}-function").outputs["name"]
    assert (
        permission["sourceArn"]
        == dev.one("aws:cloudwatch/eventRule:EventRule", f"{job}-schedule").outputs["arn"]
    )


@pytest.mark.parametrize("job", JOBS)
@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_job_errors_and_throttles_raise_an_alarm(dev: StackRecord, job: str, metric: str) -> None:
    alarm = dev.one("aws:cloudwatch/metricAlarm:MetricAlarm", f"{job}-{metric.lower()}").inputs
    assert alarm["namespace"] == "AWS/Lambda"
    assert alarm["metricName"] == metric
    assert (alarm["statistic"], alarm["threshold"]) == ("Sum", 0)
    assert alarm["dimensions"] == {
        "FunctionName": dev.one(FUNCTION, f"{job}-function").outputs["name"]
    }


@pytest.mark.parametrize("job", JOBS)
def test_job_code_is_the_archive_make_builds(dev: StackRecord, job: str) -> None:
    code = dev.one(FUNCTION, f"{job}-function").inputs["code"]
    assert isinstance(code, pulumi.FileArchive)
    assert code.path.endswith("build/jobs.zip")
