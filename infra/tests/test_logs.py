"""The services' logs: to CloudWatch, or to Datadog through a FireLens log router when a
Datadog API key secret is configured."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mailstack_infra.mocks import StackRecord
from mailstack_infra.policy_rules import Resource, check_stack
from mailstack_infra.settings import StackConfig
from mailstack_infra.sidecars import LOG_ROUTER_IMAGE

TASK = "aws:ecs/taskDefinition:TaskDefinition"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
SERVICES = ["gateway", "processor"]


def containers(stack: StackRecord, service: str) -> list[dict[str, Any]]:
    return list(stack.one(TASK, f"{service}-task").json("containerDefinitions"))


def readable_secrets(stack: StackRecord, service: str) -> list[str]:
    policy = stack.one(ROLE_POLICY, f"{service}-execution").json("policy")
    (statement,) = [
        s for s in policy["Statement"] if s["Action"] == ["secretsmanager:GetSecretValue"]
    ]
    return list(statement["Resource"])


@pytest.mark.parametrize("service", SERVICES)
def test_without_a_datadog_key_logs_go_to_cloudwatch(
    dev: StackRecord, datadog_config: StackConfig, service: str
) -> None:
    (app,) = containers(dev, service)
    assert app["logConfiguration"]["logDriver"] == "awslogs"
    assert "dependsOn" not in app
    assert datadog_config.datadog_api_key_secret_arn not in readable_secrets(dev, service)


@pytest.mark.parametrize("service", SERVICES)
def test_with_a_datadog_key_the_app_logs_through_firelens_to_datadog(
    dev_datadog: StackRecord, datadog_config: StackConfig, service: str
) -> None:
    app, router = containers(dev_datadog, service)
    assert app["name"] == service
    assert app["logConfiguration"] == {
        "logDriver": "awsfirelens",
        "options": {
            "Name": "datadog",
            "Host": "http-intake.logs.datadoghq.eu",
            "TLS": "on",
            "compress": "gzip",
            "dd_service": f"mailstack-dev-{service}",
            "dd_source": "python",
            "dd_tags": "env:dev",
            "provider": "ecs",
        },
        "secretOptions": [
            {"name": "apikey", "valueFrom": datadog_config.datadog_api_key_secret_arn}
        ],
    }
    assert app["dependsOn"] == [{"containerName": "log_router", "condition": "START"}]
    assert router["name"] == "log_router"
    assert router["image"] == datadog_config.log_router_image
    assert router["essential"] is True
    assert router["firelensConfiguration"]["type"] == "fluentbit"
    # The router's own logs stay in the service's CloudWatch group.
    group = dev_datadog.one("aws:cloudwatch/logGroup:LogGroup", f"{service}-logs")
    assert router["logConfiguration"]["logDriver"] == "awslogs"
    assert router["logConfiguration"]["options"]["awslogs-group"] == group.outputs["name"]


@pytest.mark.parametrize("service", SERVICES)
def test_only_with_a_datadog_key_may_the_execution_role_read_it(
    dev_datadog: StackRecord, datadog_config: StackConfig, service: str
) -> None:
    assert datadog_config.datadog_api_key_secret_arn in readable_secrets(dev_datadog, service)


def test_the_migration_task_keeps_logging_to_cloudwatch(dev_datadog: StackRecord) -> None:
    (migrate,) = dev_datadog.one(TASK, "migrate-task").json("containerDefinitions")
    assert migrate["logConfiguration"]["logDriver"] == "awslogs"


def test_the_default_log_router_image_is_pinned_to_a_release() -> None:
    assert re.fullmatch(
        r"public\.ecr\.aws/aws-observability/aws-for-fluent-bit:\d+\.\d+\.\d+\.\d{8}",
        LOG_ROUTER_IMAGE,
    )


def test_a_stack_logging_to_datadog_passes_every_rule(dev_datadog: StackRecord) -> None:
    resources = [Resource(type=r.type, name=r.name, props=r.outputs) for r in dev_datadog]
    assert check_stack(resources, production=False) == []
