"""The CloudWatch dashboard: what AWS measures of the system (ALB, SQS, ECS, RDS), then one
widget per metric of the single list the services expose (mailstack_core.metrics).

The services' metrics are Prometheus metrics; on ECS they reach CloudWatch only through the
collector sidecar (mailstack:prometheusToCloudWatch), which writes them under the `mailstack`
namespace. Without it those widgets stay empty and the AWS widgets still work.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from mailstack_core.metrics import CATALOGUE, Kind, Metric
from mailstack_infra.sidecars import METRICS_NAMESPACE, SCRAPE_INTERVAL

WIDTH = 12
HEIGHT = 6
PERIOD = 300


@dataclass(frozen=True)
class DashboardArgs:
    """The names of what the AWS widgets watch."""

    prefix: str
    region: str
    load_balancer_suffix: pulumi.Input[str]
    target_group_suffix: pulumi.Input[str]
    queue_name: pulumi.Input[str]
    dead_letter_queue_name: pulumi.Input[str]
    database_identifier: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    service_names: Sequence[pulumi.Input[str]]


def statistic(metric: Metric) -> str:
    """How a widget draws a metric the collector wrote: counters arrive as deltas per scrape
    (summed), histograms as distributions (their p99), gauges as values (per aggregation)."""
    if metric.kind is Kind.COUNTER:
        return "Sum"
    if metric.kind is Kind.HISTOGRAM:
        return "p99"
    return {"max": "Maximum", "min": "Minimum"}.get(metric.aggregation, "Average")


def metric_widget(metric: Metric, region: str) -> dict[str, Any]:
    """Every series of one metric, whatever its labels (dimensions), by a SEARCH expression."""
    search = (
        f"SEARCH('{{{METRICS_NAMESPACE}}} MetricName=\"{metric.name}\"', "
        f"'{statistic(metric)}', {PERIOD})"
    )
    return {
        "type": "metric",
        "width": WIDTH,
        "height": HEIGHT,
        "properties": {
            "title": metric.name,
            "region": region,
            "view": "timeSeries",
            "metrics": [[{"expression": search, "id": "m", "label": metric.help[:60]}]],
            "period": PERIOD,
        },
    }


def aws_widget(
    title: str, region: str, metrics: list[list[Any]], stat: str = "Sum"
) -> dict[str, Any]:
    return {
        "type": "metric",
        "width": WIDTH,
        "height": HEIGHT,
        "properties": {
            "title": title,
            "region": region,
            "view": "timeSeries",
            "stat": stat,
            "period": PERIOD,
            "metrics": metrics,
        },
    }


def dashboard_body(
    region: str,
    load_balancer: str,
    target_group: str,
    queue: str,
    dead_letter_queue: str,
    database: str,
    cluster: str,
    services: Sequence[str],
) -> dict[str, Any]:
    alb = ["AWS/ApplicationELB"]
    widgets = [
        aws_widget(
            "ALB requests and 5xx",
            region,
            [
                [*alb, "RequestCount", "LoadBalancer", load_balancer],
                [*alb, "HTTPCode_ELB_5XX_Count", "LoadBalancer", load_balancer],
                [*alb, "HTTPCode_Target_5XX_Count", "LoadBalancer", load_balancer],
            ],
        ),
        aws_widget(
            "ALB target response time",
            region,
            [
                [
                    *alb,
                    "TargetResponseTime",
                    "LoadBalancer",
                    load_balancer,
                    "TargetGroup",
                    target_group,
                    {"stat": stat, "label": stat},
                ]
                for stat in ("p50", "p99")
            ],
            stat="p99",
        ),
        aws_widget(
            "Email queue and dead letters",
            region,
            [
                ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", queue],
                ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", queue],
                ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", dead_letter_queue],
            ],
            stat="Maximum",
        ),
        aws_widget(
            "ECS CPU and memory",
            region,
            [
                ["AWS/ECS", metric, "ClusterName", cluster, "ServiceName", service]
                for service in services
                for metric in ("CPUUtilization", "MemoryUtilization")
            ],
            stat="Average",
        ),
        aws_widget(
            "Database",
            region,
            [
                ["AWS/RDS", metric, "DBInstanceIdentifier", database]
                for metric in ("CPUUtilization", "DatabaseConnections", "FreeableMemory")
            ],
            stat="Average",
        ),
    ]
    widgets.append(
        {
            "type": "text",
            "width": 2 * WIDTH,
            "height": 2,
            "properties": {
                "markdown": (
                    f"Service metrics (namespace `{METRICS_NAMESPACE}`), scraped every "
                    f"{SCRAPE_INTERVAL} by the collector sidecar when "
                    "`mailstack:prometheusToCloudWatch` is on; see docs/operations.md."
                )
            },
        }
    )
    widgets.extend(metric_widget(metric, region) for metric in CATALOGUE)
    return {"widgets": widgets}


def dashboard(
    name: str, args: DashboardArgs, opts: pulumi.ResourceOptions
) -> aws.cloudwatch.Dashboard:
    def body(names: list[Any]) -> str:
        return json.dumps(
            dashboard_body(
                args.region,
                load_balancer=names[0],
                target_group=names[1],
                queue=names[2],
                dead_letter_queue=names[3],
                database=names[4],
                cluster=names[5],
                services=names[6:],
            )
        )

    names = pulumi.Output.all(
        args.load_balancer_suffix,
        args.target_group_suffix,
        args.queue_name,
        args.dead_letter_queue_name,
        args.database_identifier,
        args.cluster_name,
        *args.service_names,
    )
    return aws.cloudwatch.Dashboard(
        name, dashboard_name=args.prefix, dashboard_body=names.apply(body), opts=opts
    )
