"""Checklist rows: ECS services, task definitions, service IAM, autoscaling, and their wiring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mailstack_infra.mocks import IMAGE_DIGEST, StackRecord

SERVICE = "aws:ecs/service:Service"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ROLE = "aws:iam/role:Role"
SCALING_TARGET = "aws:appautoscaling/target:Target"
SCALING_POLICY = "aws:appautoscaling/policy:Policy"
SECRET = "aws:secretsmanager/secret:Secret"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG = "aws:ec2/securityGroup:SecurityGroup"


def container(stack: StackRecord, service: str) -> dict[str, Any]:
    definitions = stack.one(TASK, f"{service}-task").json("containerDefinitions")
    assert len(definitions) == 1
    return dict(definitions[0])


def secret_arn(stack: StackRecord, key: str) -> str:
    logical = "cache-url" if key == "redis-url" else f"secrets-{key}"
    return str(stack.one(SECRET, logical).outputs["arn"])


def statements(stack: StackRecord, policy: str) -> list[dict[str, Any]]:
    return list(stack.one(ROLE_POLICY, policy).json("policy")["Statement"])


def app_subnet_ids(stack: StackRecord) -> list[str]:
    return sorted(
        s.id for s in stack.of_type("aws:ec2/subnet:Subnet") if s.inputs["tags"]["tier"] == "app"
    )


@pytest.mark.parametrize(
    ("service", "group"),
    [("gateway", "gateway"), ("processor", "processor"), ("dispatcher", "processor")],
)
def test_services_run_on_fargate_in_private_subnets_without_public_ip(
    prod: StackRecord, service: str, group: str
) -> None:
    inputs = prod.one(SERVICE, f"{service}-service").inputs
    assert inputs["launchType"] == "FARGATE"
    network = inputs["networkConfiguration"]
    assert network["assignPublicIp"] is False
    assert sorted(network["subnets"]) == app_subnet_ids(prod)
    assert network["securityGroups"] == [prod.one(SG, f"firewall-{group}").id]


def test_gateway_admits_traffic_only_from_the_alb(prod: StackRecord) -> None:
    gateway_sg = prod.one(SG, "firewall-gateway").id
    rules = [r.inputs for r in prod.of_type(INGRESS) if r.inputs["securityGroupId"] == gateway_sg]
    assert rules == [
        {
            "securityGroupId": gateway_sg,
            "ipProtocol": "tcp",
            "fromPort": 8000,
            "toPort": 8000,
            "referencedSecurityGroupId": prod.one(SG, "firewall-alb").id,
            "description": "gateway-from-alb",
        }
    ]


def test_processor_and_jobs_admit_no_traffic(prod: StackRecord) -> None:
    for role in ("processor", "jobs"):
        sg = prod.one(SG, f"firewall-{role}").id
        assert not [r for r in prod.of_type(INGRESS) if r.inputs["securityGroupId"] == sg]


@pytest.mark.parametrize("service", ["gateway", "processor", "dispatcher"])
def test_deployments_roll_back_on_failure_and_keep_full_capacity(
    dev: StackRecord, service: str
) -> None:
    inputs = dev.one(SERVICE, f"{service}-service").inputs
    assert inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert inputs["deploymentMinimumHealthyPercent"] == 100
    assert inputs["deploymentMaximumPercent"] == 200


@pytest.mark.parametrize("service", ["gateway", "processor", "dispatcher"])
def test_task_runs_read_only_as_a_non_root_user(dev: StackRecord, service: str) -> None:
    definition = container(dev, service)
    assert definition["readonlyRootFilesystem"] is True
    user = definition["user"].split(":")[0]
    assert user not in ("", "0", "root")


@pytest.mark.parametrize("service", ["gateway", "processor", "dispatcher"])
def test_task_logs_to_its_own_group_with_retention(dev: StackRecord, service: str) -> None:
    logging = container(dev, service)["logConfiguration"]
    assert logging["logDriver"] == "awslogs"
    group = dev.one("aws:cloudwatch/logGroup:LogGroup", f"{service}-logs")
    assert logging["options"]["awslogs-group"] == group.inputs["name"]
    assert group.inputs["retentionInDays"] > 0


@pytest.mark.parametrize(
    ("service", "url"),
    [
        ("gateway", "http://127.0.0.1:8000/healthz"),
        ("processor", "http://127.0.0.1:9101/healthz"),
        ("dispatcher", "http://127.0.0.1:9102/healthz"),
    ],
)
def test_task_has_a_container_health_check(dev: StackRecord, service: str, url: str) -> None:
    check = container(dev, service)["healthCheck"]
    assert check["command"][:3] == ["CMD", "python", "-c"]
    assert url in check["command"][3]
    assert "urllib" in check["command"][3]


@pytest.mark.parametrize(("service", "tag"), [("gateway", "1.2.3"), ("processor", "4.5.6")])
def test_image_is_the_digest_the_configured_tag_points_at(
    prod: StackRecord, service: str, tag: str
) -> None:
    repository = prod.one("aws:ecr/repository:Repository", f"images-{service}")
    assert container(prod, service)["image"] == (
        f"{repository.outputs['repositoryUrl']}@{IMAGE_DIGEST}"
    )
    looked_up = [args for token, args in prod.invoke_args if token == "aws:ecr/getImage:getImage"]
    assert {"repositoryName": repository.outputs["name"], "imageTag": tag} in [
        {key: args.get(key) for key in ("repositoryName", "imageTag")} for args in looked_up
    ]
    assert repository.inputs["imageScanningConfiguration"] == {"scanOnPush": True}


def test_the_dispatcher_runs_the_processor_image_with_its_own_command_and_only_the_database(
    prod: StackRecord,
) -> None:
    definition = container(prod, "dispatcher")
    assert definition["image"] == container(prod, "processor")["image"]
    assert definition["command"] == ["python", "-m", "mailstack_processor.webhooks"]
    assert [s["name"] for s in definition["secrets"]] == ["DATABASE_URL"]
    assert definition["secrets"][0]["valueFrom"] == secret_arn(prod, "database-url")
    environment = {e["name"]: e["value"] for e in definition["environment"]}
    # The SSRF guard's allow-list stays empty in AWS: no private address is ever called.
    assert "WEBHOOK_ALLOWED_NETWORKS" not in environment
    assert "WEBHOOK_HTTP_HOSTS" not in environment
    assert environment["DISPATCHER_HEALTH_PORT"] == "9102"
    # No AWS API but its own logs (the metrics collector's, when there is one).
    policies = [r for r in prod.of_type(ROLE_POLICY) if r.name == "dispatcher-task"]
    actions = {
        action
        for policy in policies
        for statement in policy.json("policy")["Statement"]
        for action in statement["Action"]
    }
    assert actions <= {"logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"}
    assert prod.one(SERVICE, "dispatcher-service").inputs["desiredCount"] == 1


def test_prod_tags_are_immutable(prod: StackRecord) -> None:
    for service in ("gateway", "processor"):
        repository = prod.one("aws:ecr/repository:Repository", f"images-{service}").inputs
        assert repository["imageTagMutability"] == "IMMUTABLE"
        assert not repository.get("imageTagMutabilityExclusionFilters")


def test_dev_tags_may_be_pushed_again_all_others_are_immutable(dev: StackRecord) -> None:
    """`dev` follows a branch; the task definitions pin its digest at each `pulumi up`."""
    for service in ("gateway", "processor"):
        repository = dev.one("aws:ecr/repository:Repository", f"images-{service}").inputs
        assert repository["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
        assert repository["imageTagMutabilityExclusionFilters"] == [
            {"filter": "dev*", "filterType": "WILDCARD"}
        ]
        assert "@sha256:" in container(dev, service)["image"]


@pytest.mark.parametrize("service", ["gateway", "processor"])
def test_tasks_run_on_the_configured_architecture(dev: StackRecord, service: str) -> None:
    platform = dev.one(TASK, f"{service}-task").inputs["runtimePlatform"]
    assert platform == {"operatingSystemFamily": "LINUX", "cpuArchitecture": "X86_64"}
    assert dev.outputs["image_platform"] == "linux/amd64"


def test_the_first_deployment_creates_no_service_and_no_migration(
    dev_bootstrap: StackRecord,
) -> None:
    """Without images no task could start, and the circuit breaker would fail the deployment."""
    for type_ in (SERVICE, TASK, SCALING_TARGET, "aws:lambda/invocation:Invocation"):
        assert dev_bootstrap.of_type(type_) == [], type_
    assert "aws:ecr/getImage:getImage" not in dev_bootstrap.invokes
    assert len(dev_bootstrap.of_type("aws:ecr/repository:Repository")) == 2
    assert dev_bootstrap.outputs["images_ready"] is False


def test_schedules_wait_for_the_schema_on_the_first_deployment(
    dev_bootstrap: StackRecord, dev: StackRecord
) -> None:
    for job in ("cleanup", "retry"):
        rule = f"{job}-schedule"
        event_rule = "aws:cloudwatch/eventRule:EventRule"
        assert dev_bootstrap.one(event_rule, rule).inputs["state"] == "DISABLED"
        assert dev.one(event_rule, rule).inputs["state"] == "ENABLED"


@pytest.mark.parametrize("service", ["gateway", "processor"])
def test_services_start_only_after_the_migration_ran(prod: StackRecord, service: str) -> None:
    depends_on = prod.depends_on[(SERVICE, f"{service}-service")]
    assert {"migrate-run", "database", "database-proxy"} <= depends_on


def test_gateway_environment_uses_the_names_the_gateway_reads(
    prod: StackRecord, sendgrid_event_key: str
) -> None:
    definition = container(prod, "gateway")
    queue = prod.one("aws:sqs/queue:Queue", "email-queue-queue")
    attachments = prod.one("aws:s3/bucket:Bucket", "attachments")
    assert {e["name"]: e["value"] for e in definition["environment"]} == {
        "EMAIL_QUEUE_URL": queue.outputs["url"],
        "EMAIL_DLQ_URL": prod.one("aws:sqs/queue:Queue", "email-queue-dlq").outputs["url"],
        "ATTACHMENTS_BUCKET": attachments.outputs["bucket"],
        "AWS_REGION": "eu-west-1",
        "GATEWAY_HOST": "0.0.0.0",  # noqa: S104  # the value under test, not a bind
        "GATEWAY_PORT": "8000",
        "GATEWAY_KEEP_ALIVE_SECONDS": "75",
        "DATABASE_POOL_SIZE": "7",
        "PGSSLROOTCERT": "/etc/ssl/certs/mailstack-database-ca.pem",
        "RATE_LIMIT_SEND_PER_MINUTE": "600",
        "RATE_LIMIT_READ_PER_MINUTE": "1200",
        "AUTH_CACHE_SECONDS": "10",
        "API_KEY_LAST_USED_FLUSH_SECONDS": "60",
        "SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY": sendgrid_event_key,
        "PROVIDER_EVENT_MAX_AGE_SECONDS": "600",
    }
    assert {s["name"]: s["valueFrom"] for s in definition["secrets"]} == {
        "DATABASE_URL": secret_arn(prod, "database-url"),
        "DATABASE_READ_URL": secret_arn(prod, "database-read-url"),
        "REDIS_URL": secret_arn(prod, "redis-url"),
        "ELASTICEMAIL_NOTIFICATION_SECRET": secret_arn(prod, "elasticemail-notification-secret"),
    }
    assert definition["portMappings"] == [
        {"containerPort": 8000, "hostPort": 8000, "protocol": "tcp"}
    ]


def test_processor_environment_uses_the_names_the_processor_reads(prod: StackRecord) -> None:
    definition = container(prod, "processor")
    queue = prod.one("aws:sqs/queue:Queue", "email-queue-queue")
    attachments = prod.one("aws:s3/bucket:Bucket", "attachments")
    dlq = prod.one("aws:sqs/queue:Queue", "email-queue-dlq")
    assert {e["name"]: e["value"] for e in definition["environment"]} == {
        "EMAIL_QUEUE_URL": queue.outputs["url"],
        "ATTACHMENTS_BUCKET": attachments.outputs["bucket"],
        "EMAIL_DLQ_URL": dlq.outputs["url"],
        "MAX_ATTEMPTS": "5",
        "AWS_REGION": "eu-west-1",
        "ELASTICEMAIL_BASE_URL": "https://api.elasticemail.com",
        "SENDGRID_BASE_URL": "https://api.sendgrid.com",
        "PROVIDER_TIMEOUT_SECONDS": "3",
        "PROCESSOR_HEALTH_PORT": "9101",
        "DATABASE_POOL_SIZE": "7",
        "DATABASE_MAX_OVERFLOW": "0",
        "PGSSLROOTCERT": "/etc/ssl/certs/mailstack-database-ca.pem",
    }
    assert {s["name"]: s["valueFrom"] for s in definition["secrets"]} == {
        "DATABASE_URL": secret_arn(prod, "database-url"),
        "ELASTICEMAIL_API_KEY": secret_arn(prod, "elasticemail-api-key"),
        "SENDGRID_API_KEY": secret_arn(prod, "sendgrid-api-key"),
    }
    assert definition["portMappings"] == []


@pytest.mark.parametrize(
    ("service", "secrets"),
    [
        (
            "gateway",
            {"database-url", "database-read-url", "redis-url", "elasticemail-notification-secret"},
        ),
        ("processor", {"database-url", "elasticemail-api-key", "sendgrid-api-key"}),
    ],
)
def test_execution_role_reads_only_the_secrets_its_task_names(
    prod: StackRecord, service: str, secrets: set[str]
) -> None:
    granted = [
        s
        for s in statements(prod, f"{service}-execution")
        if any("secretsmanager" in a for a in s["Action"])
    ]
    assert len(granted) == 1
    assert granted[0]["Action"] == ["secretsmanager:GetSecretValue"]
    assert sorted(granted[0]["Resource"]) == sorted(secret_arn(prod, key) for key in secrets)


def test_gateway_may_only_send_to_its_queue_put_attachments_read_attributes_and_redrive(
    prod: StackRecord,
) -> None:
    """/readyz asks the queue for its attributes: without the right it answered 503 forever.
    The redrive is a move task from the DLQ, started and watched by the gateway."""
    queue_arn = prod.one("aws:sqs/queue:Queue", "email-queue-queue").outputs["arn"]
    dlq_arn = prod.one("aws:sqs/queue:Queue", "email-queue-dlq").outputs["arn"]
    bucket_arn = prod.one("aws:s3/bucket:Bucket", "attachments").outputs["arn"]
    redrive = [
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ListMessageMoveTasks",
        "sqs:ReceiveMessage",
        "sqs:StartMessageMoveTask",
    ]
    assert statements(prod, "gateway-task") == [
        {"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": [queue_arn]},
        {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": [f"{bucket_arn}/*"]},
        {"Effect": "Allow", "Action": ["sqs:GetQueueAttributes"], "Resource": [queue_arn]},
        {"Effect": "Allow", "Action": redrive, "Resource": [dlq_arn]},
    ]


def test_processor_may_only_consume_its_queues_and_get_attachments(prod: StackRecord) -> None:
    consume = [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ]
    bucket_arn = prod.one("aws:s3/bucket:Bucket", "attachments").outputs["arn"]
    assert statements(prod, "processor-task") == [
        *(
            {
                "Effect": "Allow",
                "Action": consume,
                "Resource": [prod.one("aws:sqs/queue:Queue", name).outputs["arn"]],
            }
            for name in ("email-queue-queue", "email-queue-dlq")
        ),
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"{bucket_arn}/*"]},
    ]


def test_max_attempts_follows_the_queues_max_receive_count(prod: StackRecord) -> None:
    redrive = prod.one("aws:sqs/queue:Queue", "email-queue-queue").json("redrivePolicy")
    environment = {e["name"]: e["value"] for e in container(prod, "processor")["environment"]}
    assert environment["MAX_ATTEMPTS"] == str(redrive["maxReceiveCount"])


def test_task_roles_trust_only_ecs_tasks_of_this_account(prod: StackRecord) -> None:
    for name in ("gateway-execution", "gateway-task", "processor-execution", "processor-task"):
        trust = prod.one(ROLE, name).json("assumeRolePolicy")["Statement"]
        assert trust == [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}},
            }
        ]


def test_target_group_is_attached_to_the_gateway_service(prod: StackRecord) -> None:
    group = prod.one("aws:lb/targetGroup:TargetGroup", "edge-gateway")
    attachments = prod.one(SERVICE, "gateway-service").inputs["loadBalancers"]
    assert attachments == [
        {"targetGroupArn": group.outputs["arn"], "containerName": "gateway", "containerPort": 8000}
    ]
    assert (
        "loadBalancers" not in prod.one(SERVICE, "processor-service").inputs
        or not prod.one(SERVICE, "processor-service").inputs["loadBalancers"]
    )


@pytest.mark.parametrize(
    ("service", "minimum", "maximum"), [("gateway", 3, 12), ("processor", 2, 20)]
)
def test_scaling_targets_point_at_the_services(
    prod: StackRecord, service: str, minimum: int, maximum: int
) -> None:
    target = prod.one(SCALING_TARGET, f"{service}-scaling").inputs
    cluster = prod.one("aws:ecs/cluster:Cluster", "ecs-cluster").outputs["name"]
    name = prod.one(SERVICE, f"{service}-service").outputs["name"]
    assert target["resourceId"] == f"service/{cluster}/{name}"
    assert target["scalableDimension"] == "ecs:service:DesiredCount"
    assert (target["minCapacity"], target["maxCapacity"]) == (minimum, maximum)


def test_services_leave_the_task_count_to_autoscaling(prod: StackRecord) -> None:
    # ignore_changes is not visible to mocks; the desired count starts at the minimum.
    assert prod.one(SERVICE, "gateway-service").inputs["desiredCount"] == 3


def test_gateway_scales_on_requests_per_target_and_cpu_with_two_tasks_minimum(
    dev: StackRecord,
) -> None:
    assert dev.one(SCALING_TARGET, "gateway-scaling").inputs["minCapacity"] >= 2
    requests = dev.one(SCALING_POLICY, "gateway-requests-per-target").inputs
    metric = requests["targetTrackingScalingPolicyConfiguration"]["predefinedMetricSpecification"]
    alb = dev.one("aws:lb/loadBalancer:LoadBalancer", "edge-alb").outputs["arnSuffix"]
    group = dev.one("aws:lb/targetGroup:TargetGroup", "edge-gateway").outputs["arnSuffix"]
    assert metric == {
        "predefinedMetricType": "ALBRequestCountPerTarget",
        "resourceLabel": f"{alb}/{group}",
    }
    cpu = dev.one(SCALING_POLICY, "gateway-cpu").inputs
    assert (
        cpu["targetTrackingScalingPolicyConfiguration"]["predefinedMetricSpecification"][
            "predefinedMetricType"
        ]
        == "ECSServiceAverageCPUUtilization"
    )
    for policy in (requests, cpu):
        assert (
            policy["resourceId"] == dev.one(SCALING_TARGET, "gateway-scaling").inputs["resourceId"]
        )


def test_processor_scales_on_queue_backlog_per_task(dev: StackRecord) -> None:
    policy = dev.one(SCALING_POLICY, "processor-backlog-per-task").inputs
    config = policy["targetTrackingScalingPolicyConfiguration"]
    metrics = {m["id"]: m for m in config["customizedMetricSpecification"]["metrics"]}
    queue = dev.one("aws:sqs/queue:Queue", "email-queue-queue").outputs["name"]
    visible = metrics["visible"]["metricStat"]["metric"]
    assert visible["metricName"] == "ApproximateNumberOfMessagesVisible"
    assert visible["dimensions"] == [{"name": "QueueName", "value": queue}]
    tasks = metrics["tasks"]["metricStat"]["metric"]
    service = dev.one(SERVICE, "processor-service").outputs["name"]
    assert {"name": "ServiceName", "value": service} in tasks["dimensions"]
    assert metrics["backlog_per_task"]["returnData"] is True
    assert "visible" in metrics["backlog_per_task"]["expression"]
    assert config["targetValue"] == 100


def test_an_alarm_fires_on_any_email_republished_after_its_message_was_lost(
    prod: StackRecord,
) -> None:
    gateway_logs = prod.one("aws:cloudwatch/logGroup:LogGroup", "gateway-logs").outputs["name"]
    counted = prod.one("aws:cloudwatch/logMetricFilter:LogMetricFilter", "gateway-republished")
    transformation = counted.inputs["metricTransformation"]
    assert counted.inputs["logGroupName"] == gateway_logs
    assert '$.event = "outbox.republished"' in counted.inputs["pattern"]
    assert transformation["value"] == "$.count"

    alarm = prod.one("aws:cloudwatch/metricAlarm:MetricAlarm", "gateway-republished").inputs
    assert (alarm["namespace"], alarm["metricName"]) == (
        transformation["namespace"],
        transformation["name"],
    )
    assert alarm["statistic"] == "Sum"
    assert alarm["threshold"] == 0
    assert alarm["comparisonOperator"] == "GreaterThanThreshold"
    assert alarm["alarmActions"]


def dockerfile_stages() -> dict[str, list[str]]:
    """The repository's Dockerfile, its instructions by stage name."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    dockerfile = Path(__file__).resolve().parents[2] / "Dockerfile"
    for line in dockerfile.read_text().splitlines():
        if line.startswith("FROM "):
            current = stages.setdefault(line.split()[-1], [])
        elif line and not line.startswith("#"):
            current.append(line)
    return stages


@pytest.mark.parametrize("service", ["gateway", "processor"])
def test_the_image_holds_the_ca_bundle_the_task_verifies_the_database_with(
    dev: StackRecord, service: str
) -> None:
    """sslmode=verify-full needs PGSSLROOTCERT to name a file the image has."""
    environment = {e["name"]: e["value"] for e in container(dev, service)["environment"]}
    bundle = environment["PGSSLROOTCERT"]
    stages = dockerfile_stages()
    copies = [line.split() for line in stages[service] if line.startswith("COPY --from=")]
    sources = {words[1].removeprefix("--from="): words[-1] for words in copies}
    assert sources.get("database-ca") == bundle
    fetched = " ".join(stages["database-ca"])
    assert "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem" in fetched
    assert "/etc/ssl/certs/ca-certificates.crt" in fetched  # the Amazon roots, for the proxy


def test_without_provider_event_config_the_gateway_gets_neither_key_nor_secret(
    dev: StackRecord,
) -> None:
    """Unset, the gateway refuses those providers' events (401); no empty secret stops a task."""
    definition = container(dev, "gateway")
    names = {e["name"] for e in definition["environment"]} | {
        s["name"] for s in definition["secrets"]
    }
    assert not names & {
        "SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY",
        "ELASTICEMAIL_NOTIFICATION_SECRET",
        "PROVIDER_EVENT_MAX_AGE_SECONDS",
    }
    assert not [s for s in dev.of_type(SECRET) if "notification" in s.name]


def test_the_notification_secret_holds_its_value_and_only_the_gateway_reads_it(
    prod: StackRecord,
) -> None:
    arn = secret_arn(prod, "elasticemail-notification-secret")
    version = prod.one(
        "aws:secretsmanager/secretVersion:SecretVersion", "secrets-elasticemail-notification-secret"
    )
    assert version.inputs["secretString"] == "ee-notification-secret"
    readers = [
        policy.name
        for policy in prod.of_type(ROLE_POLICY)
        if arn in json.dumps(policy.json("policy"))
    ]
    assert readers == ["gateway-execution"]
