"""The CloudWatch dashboard from the one metric list, and the collector sidecar that fills it."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest

from mailstack_core.metrics import CATALOGUE
from mailstack_infra.mocks import StackRecord
from mailstack_infra.policy_rules import Resource, check_stack
from mailstack_infra.settings import ConfigError, StackConfig
from mailstack_infra.sidecars import COLLECTOR_IMAGE

DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
SECRET = "aws:secretsmanager/secret:Secret"
PORTS = {"gateway": 8000, "processor": 9101}


def widgets(stack: StackRecord) -> list[dict[str, Any]]:
    return list(stack.one(DASHBOARD, "dashboard").json("dashboardBody")["widgets"])


def containers(stack: StackRecord, service: str) -> list[dict[str, Any]]:
    return list(stack.one(TASK, f"{service}-task").json("containerDefinitions"))


def scrape_configs(collector: dict[str, Any]) -> list[dict[str, Any]]:
    (variable,) = collector["environment"]
    assert variable["name"] == "AOT_CONFIG_CONTENT"
    config = json.loads(variable["value"])
    return list(config["receivers"]["prometheus"]["config"]["scrape_configs"])


def log_actions(stack: StackRecord, service: str) -> list[dict[str, Any]]:
    policy = stack.one(ROLE_POLICY, f"{service}-task").json("policy")
    return [s for s in policy["Statement"] if any(a.startswith("logs:") for a in s["Action"])]


def test_every_listed_metric_has_a_widget_on_the_mailstack_namespace(dev: StackRecord) -> None:
    by_title = {w["properties"].get("title"): w for w in widgets(dev) if w["type"] == "metric"}
    for metric in CATALOGUE:
        widget = by_title[metric.name]
        ((query,),) = widget["properties"]["metrics"]
        assert query["expression"].startswith("SEARCH('{mailstack} "), metric.name
        assert f'MetricName="{metric.name}"' in query["expression"]
    # Histograms as their p99, counters (deltas per scrape) summed.
    for name, statistic in (
        ("mailstack_gateway_request_seconds", "'p99'"),
        ("mailstack_processor_sends_total", "'Sum'"),
    ):
        ((query,),) = by_title[name]["properties"]["metrics"]
        assert f", {statistic}, 300)" in query["expression"]


def test_the_dashboard_watches_the_alb_the_queues_the_services_and_the_database(
    dev: StackRecord,
) -> None:
    body = json.dumps(widgets(dev))
    for resource_type, name, key in (
        ("aws:lb/loadBalancer:LoadBalancer", "edge-alb", "arnSuffix"),
        ("aws:sqs/queue:Queue", "email-queue-queue", "name"),
        ("aws:sqs/queue:Queue", "email-queue-dlq", "name"),
        ("aws:rds/instance:Instance", "database-primary", "identifier"),
        ("aws:ecs/service:Service", "gateway-service", "name"),
        ("aws:ecs/service:Service", "processor-service", "name"),
    ):
        assert json.dumps(dev.one(resource_type, name).outputs[key]) in body, name
    assert dev.one(DASHBOARD, "dashboard").inputs["dashboardName"] == "mailstack-dev"


@pytest.mark.parametrize("service", ["gateway", "processor"])
def test_without_prometheus_to_cloudwatch_the_task_runs_the_app_only(
    dev: StackRecord, service: str
) -> None:
    assert [c["name"] for c in containers(dev, service)] == [service]
    assert log_actions(dev, service) == []


@pytest.mark.parametrize("service", ["gateway", "processor"])
def test_the_collector_scrapes_the_metrics_port_into_the_mailstack_namespace(
    dev_observed: StackRecord, observed_config: StackConfig, service: str
) -> None:
    app, collector = containers(dev_observed, service)
    assert app["name"] == service
    assert collector["name"] == "metrics"
    assert collector["image"] == observed_config.collector_image
    assert collector["essential"] is False
    assert collector["readonlyRootFilesystem"] is True
    (variable,) = collector["environment"]
    assert variable["name"] == "AOT_CONFIG_CONTENT"
    config = json.loads(variable["value"])
    (scrape,) = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    assert scrape["static_configs"] == [{"targets": [f"127.0.0.1:{PORTS[service]}"]}]
    group = dev_observed.one("aws:cloudwatch/logGroup:LogGroup", f"{service}-logs")
    assert config["exporters"]["awsemf"]["namespace"] == "mailstack"
    assert config["exporters"]["awsemf"]["log_group_name"] == group.outputs["name"]
    assert config["service"]["pipelines"]["metrics"] == {
        "receivers": ["prometheus"],
        "exporters": ["awsemf"],
    }
    (statement,) = log_actions(dev_observed, service)
    assert statement["Resource"] == [f"{group.outputs['arn']}:*"]


def test_the_gateway_collector_scrapes_with_the_metrics_key_secret(
    dev_observed: StackRecord,
) -> None:
    """The gateway's /metrics answers an admin-scope key only; the processor's health port
    answers anyone inside the task."""
    key = dev_observed.one(SECRET, "secrets-metrics-api-key")
    assert key.inputs["name"] == "mailstack-dev/metrics-api-key"
    gateway = containers(dev_observed, "gateway")[1]
    assert gateway["secrets"] == [{"name": "METRICS_API_KEY", "valueFrom": key.outputs["arn"]}]
    (scrape,) = scrape_configs(gateway)
    assert scrape["authorization"] == {"type": "Bearer", "credentials": "${env:METRICS_API_KEY}"}
    granted = [
        s
        for s in dev_observed.one(ROLE_POLICY, "gateway-execution").json("policy")["Statement"]
        if s["Action"] == ["secretsmanager:GetSecretValue"]
    ]
    assert key.outputs["arn"] in granted[0]["Resource"]
    processor = containers(dev_observed, "processor")[1]
    assert processor["secrets"] == []
    assert "authorization" not in scrape_configs(processor)[0]


def test_without_the_collector_there_is_no_metrics_key_secret(dev: StackRecord) -> None:
    assert [s for s in dev.of_type(SECRET) if "metrics" in s.name] == []


def test_the_default_collector_image_is_pinned_to_a_release() -> None:
    assert re.fullmatch(
        r"public\.ecr\.aws/aws-observability/aws-otel-collector:v\d+\.\d+\.\d+", COLLECTOR_IMAGE
    )


def test_the_collector_needs_the_metrics_key(observed_config: StackConfig) -> None:
    with pytest.raises(ConfigError, match="mailstack:metricsApiKey"):
        replace(observed_config, metrics_api_key=None)


def test_a_stack_with_the_collector_passes_every_rule(dev_observed: StackRecord) -> None:
    """The key's secret has a value, and the collector runs by digest (mailstack:collectorImage)."""
    resources = [Resource(type=r.type, name=r.name, props=r.outputs) for r in dev_observed]
    assert check_stack(resources, production=False) == []
