"""Checklist rows: observability, IAM across the stack, and the provider's default tags."""

from __future__ import annotations

import json

import pytest

from mailstack_infra.mocks import StackRecord

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def test_every_log_group_has_retention(dev: StackRecord, prod: StackRecord) -> None:
    for stack in (dev, prod):
        groups = stack.of_type("aws:cloudwatch/logGroup:LogGroup")
        assert groups
        assert all(g.inputs.get("retentionInDays", 0) > 0 for g in groups)


def test_alarms_notify_a_topic_encrypted_with_its_own_key(prod: StackRecord) -> None:
    """Not `alias/aws/sns`: CloudWatch may not use the AWS-managed key, so alarms encrypted
    with it change state and notify no one."""
    topic = prod.one("aws:sns/topic:Topic", "alarms-topic")
    key = prod.one("aws:kms/key:Key", "alarms-key")
    assert topic.inputs["kmsMasterKeyId"] == key.outputs["arn"]
    assert key.inputs["enableKeyRotation"] is True
    for alarm in prod.of_type(ALARM):
        assert alarm.inputs["alarmActions"] == [topic.outputs["arn"]]


def test_the_alarm_key_lets_cloudwatch_and_eventbridge_publish(prod: StackRecord) -> None:
    statements = prod.one("aws:kms/key:Key", "alarms-key").json("policy")["Statement"]
    (publishers,) = [s for s in statements if "Service" in s["Principal"]]
    assert publishers["Effect"] == "Allow"
    assert sorted(publishers["Principal"]["Service"]) == [
        "cloudwatch.amazonaws.com",
        "events.amazonaws.com",
    ]
    assert sorted(publishers["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    (admin,) = [s for s in statements if "AWS" in s["Principal"]]
    assert admin["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}


def test_the_topic_accepts_alarms_and_rules_of_this_account(prod: StackRecord) -> None:
    topic = prod.one("aws:sns/topic:Topic", "alarms-topic").outputs["arn"]
    policy = prod.one("aws:sns/topicPolicy:TopicPolicy", "alarms-topic")
    assert policy.inputs["arn"] == topic
    (statement,) = policy.json("policy")["Statement"]
    assert statement["Action"] == "sns:Publish"
    assert statement["Resource"] == topic
    assert sorted(statement["Principal"]["Service"]) == [
        "cloudwatch.amazonaws.com",
        "events.amazonaws.com",
    ]
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


@pytest.mark.parametrize(("service", "minimum"), [("gateway", 3), ("processor", 2)])
def test_a_service_below_its_minimum_task_count_raises_an_alarm(
    prod: StackRecord, service: str, minimum: int
) -> None:
    alarm = prod.one(ALARM, f"{service}-running-tasks").inputs
    assert (alarm["namespace"], alarm["metricName"]) == (
        "ECS/ContainerInsights",
        "RunningTaskCount",
    )
    assert alarm["dimensions"]["ServiceName"] == f"mailstack-prod-{service}"
    assert (alarm["threshold"], alarm["comparisonOperator"]) == (minimum, "LessThanThreshold")
    assert alarm["treatMissingData"] == "breaching"


@pytest.mark.parametrize("service", ["gateway", "processor"])
def test_a_failed_deployment_is_published_to_the_alarm_topic(
    prod: StackRecord, service: str
) -> None:
    rule = prod.one("aws:cloudwatch/eventRule:EventRule", f"{service}-deployment-failed")
    pattern = rule.json("eventPattern")
    assert pattern["source"] == ["aws.ecs"]
    assert pattern["detail-type"] == ["ECS Deployment State Change"]
    assert pattern["detail"] == {"eventName": ["SERVICE_DEPLOYMENT_FAILED"]}
    assert pattern["resources"] == [prod.one("aws:ecs/service:Service", f"{service}-service").id]
    target = prod.one("aws:cloudwatch/eventTarget:EventTarget", f"{service}-deployment-failed")
    assert target.inputs["rule"] == rule.outputs["name"]
    assert target.inputs["arn"] == prod.one("aws:sns/topic:Topic", "alarms-topic").outputs["arn"]


def test_prod_requires_an_alarm_email_subscription(prod: StackRecord) -> None:
    subscription = prod.one("aws:sns/topicSubscription:TopicSubscription", "alarms-email")
    assert subscription.inputs["endpoint"] == "oncall@example.com"


@pytest.mark.parametrize(
    ("namespace", "metric"),
    [
        ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"),
        ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"),
        ("AWS/ApplicationELB", "UnHealthyHostCount"),
        ("AWS/ECS", "CPUUtilization"),
        ("AWS/ECS", "MemoryUtilization"),
        ("ECS/ContainerInsights", "RunningTaskCount"),
        ("AWS/ApplicationELB", "TargetResponseTime"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
        ("AWS/RDS", "CPUUtilization"),
        ("AWS/RDS", "FreeStorageSpace"),
        ("AWS/RDS", "DatabaseConnections"),
        ("AWS/RDS", "ReplicaLag"),
        ("AWS/RDS", "FreeableMemory"),
        ("AWS/RDS", "ReadLatency"),
        ("AWS/RDS", "WriteLatency"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
    ],
)
def test_the_stack_alarms_on(prod: StackRecord, namespace: str, metric: str) -> None:
    assert [
        a
        for a in prod.of_type(ALARM)
        if a.inputs["namespace"] == namespace and a.inputs["metricName"] == metric
    ]


def test_ecs_alarms_cover_every_service(prod: StackRecord) -> None:
    services = {
        a.inputs["dimensions"]["ServiceName"]
        for a in prod.of_type(ALARM)
        if a.inputs["namespace"] == "AWS/ECS"
    }
    assert services == {
        "mailstack-prod-gateway",
        "mailstack-prod-processor",
        "mailstack-prod-dispatcher",
    }


def test_no_iam_policy_allows_a_wildcard_action(
    dev: StackRecord, prod: StackRecord, localstack: StackRecord
) -> None:
    for stack in (dev, prod, localstack):
        for policy in stack.of_type("aws:iam/rolePolicy:RolePolicy"):
            for statement in policy.json("policy")["Statement"]:
                assert all("*" not in action for action in statement["Action"]), policy.name


def test_only_the_registry_token_action_has_an_unscoped_resource(prod: StackRecord) -> None:
    for policy in prod.of_type("aws:iam/rolePolicy:RolePolicy"):
        for statement in policy.json("policy")["Statement"]:
            if "*" in statement["Resource"]:
                assert statement["Action"] == ["ecr:GetAuthorizationToken"], policy.name


def test_every_trust_policy_names_one_service(dev: StackRecord, prod: StackRecord) -> None:
    for stack in (dev, prod):
        for role in stack.of_type("aws:iam/role:Role"):
            (statement,) = role.json("assumeRolePolicy")["Statement"]
            assert statement["Action"] == "sts:AssumeRole"
            assert set(statement["Principal"]) == {"Service"}
            assert isinstance(statement["Principal"]["Service"], str)


def _provider(stack: StackRecord) -> dict[str, object]:
    (provider,) = stack.of_type("pulumi:providers:aws")
    return dict(provider.inputs)


def _config(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value


@pytest.mark.parametrize("fixture", ["dev", "prod", "localstack"])
def test_provider_tags_everything_with_project_stack_and_owner(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    stack: StackRecord = request.getfixturevalue(fixture)
    tags = _config(_provider(stack)["defaultTags"])
    assert tags == {"tags": {"project": "mailstack", "stack": fixture, "owner": "platform-team"}}
    (provider,) = stack.of_type("pulumi:providers:aws")
    reference = f"::{provider.id}"
    aws_resources = [r for r in stack if r.type.startswith("aws:")]
    assert aws_resources
    for resource in aws_resources:
        assert resource.provider is not None
        assert resource.provider.endswith(reference), resource.name
        assert "pulumi:providers:aws::aws" in resource.provider


def test_the_program_makes_only_the_mocked_invokes(prod: StackRecord) -> None:
    assert set(prod.invokes) == {
        "aws:index/getAvailabilityZones:getAvailabilityZones",
        "aws:index/getCallerIdentity:getCallerIdentity",
        "aws:index/getPartition:getPartition",
        "aws:ecr/getImage:getImage",
    }


def test_stack_outputs_what_a_deployer_needs(prod: StackRecord) -> None:
    for key in (
        "gateway_url",
        "gateway_repository_url",
        "processor_repository_url",
        "email_queue_url",
        "archive_bucket",
        "database_endpoint",
        "cleanup_function",
        "retry_function",
        "database_proxy_endpoint",
        "migration_task_definition",
        "migration_log_group",
        "app_subnet_ids",
        "migrate_security_group_id",
        "image_platform",
    ):
        assert prod.outputs[key], key
    assert prod.outputs["gateway_url"].startswith("https://")
