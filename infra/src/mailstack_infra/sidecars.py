"""Sidecar containers a service's task may carry besides the app: the collector that turns its
Prometheus metrics into CloudWatch metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

# The images run as this unprivileged user; files they need are world-readable.
CONTAINER_USER = "10001:10001"
# Where the collector writes: the namespace the dashboard's per-metric widgets read.
METRICS_NAMESPACE = "mailstack"
METRICS_CONTAINER = "metrics"
# AWS Distro for OpenTelemetry, pinned: a new collector is a reviewed change.
COLLECTOR_IMAGE = "public.ecr.aws/aws-observability/aws-otel-collector:v0.47.0"
SCRAPE_INTERVAL = "60s"
# The variable holding the bearer key a scrape sends (the gateway's /metrics wants admin scope).
SCRAPE_KEY_VARIABLE = "METRICS_API_KEY"


def collector_config(
    job: str, port: int, log_group_name: pulumi.Input[str], region: str, authorized: bool
) -> dict[str, Any]:
    """Scrape the app's /metrics on the task's loopback, write them as CloudWatch embedded
    metrics (EMF) in the service's log group, namespace `mailstack`, one series per label set.
    `authorized`: send the key of SCRAPE_KEY_VARIABLE (the collector expands ${env:...})."""
    scrape: dict[str, Any] = {
        "job_name": job,
        "scrape_interval": SCRAPE_INTERVAL,
        "metrics_path": "/metrics",
        "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
    }
    if authorized:
        scrape["authorization"] = {
            "type": "Bearer",
            "credentials": f"${{env:{SCRAPE_KEY_VARIABLE}}}",
        }
    return {
        "receivers": {"prometheus": {"config": {"scrape_configs": [scrape]}}},
        "exporters": {
            "awsemf": {
                "namespace": METRICS_NAMESPACE,
                "region": region,
                "log_group_name": log_group_name,
                "log_stream_name": f"{METRICS_CONTAINER}/{{TaskId}}",
                "dimension_rollup_option": "NoDimensionRollup",
            }
        },
        "service": {
            "pipelines": {"metrics": {"receivers": ["prometheus"], "exporters": ["awsemf"]}}
        },
    }


def metrics_collector(
    job: str,
    *,
    image: str,
    port: int,
    log_group_name: pulumi.Input[str],
    region: str,
    log_configuration: dict[str, Any],
    secrets: Mapping[str, pulumi.Input[str]],
) -> dict[str, Any]:
    """The collector container: not essential (the app serves without it), its configuration
    inline (AOT_CONFIG_CONTENT; JSON is YAML)."""
    config = pulumi.Output.json_dumps(
        collector_config(job, port, log_group_name, region, bool(secrets))
    )
    return {
        "name": METRICS_CONTAINER,
        "image": image,
        "essential": False,
        "cpu": 0,
        "user": CONTAINER_USER,
        "readonlyRootFilesystem": True,
        "portMappings": [],
        "environment": [{"name": "AOT_CONFIG_CONTENT", "value": config}],
        "secrets": [{"name": key, "valueFrom": arn} for key, arn in sorted(secrets.items())],
        "mountPoints": [],
        "volumesFrom": [],
        "systemControls": [],
        "logConfiguration": log_configuration,
    }
