"""Sidecar containers a service's task may carry besides the app: the collector that turns its
Prometheus metrics into CloudWatch metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


# -- logs to Datadog through FireLens ---------------------------------------------------------
LOG_ROUTER_CONTAINER = "log_router"
# AWS for Fluent Bit, pinned: a new router is a reviewed change.
LOG_ROUTER_IMAGE = "public.ecr.aws/aws-observability/aws-for-fluent-bit:2.32.5.20250527"


@dataclass(frozen=True)
class DatadogLogs:
    """Where FireLens sends a task's logs: Datadog's intake of `site`, keyed by the API key in
    a Secrets Manager secret the operator created (mailstack:datadogApiKeySecretArn)."""

    api_key_secret_arn: str
    env: str
    site: str = "datadoghq.com"
    router_image: str = LOG_ROUTER_IMAGE

    @property
    def host(self) -> str:
        return f"http-intake.logs.{self.site}"


def datadog_log_configuration(service: str, datadog: DatadogLogs) -> dict[str, Any]:
    """An app container's logs through the task's log router to Datadog, JSON lines as they
    are (the services log JSON with `level` and `dd.trace_id`)."""
    return {
        "logDriver": "awsfirelens",
        "options": {
            "Name": "datadog",
            "Host": datadog.host,
            "TLS": "on",
            "compress": "gzip",
            "dd_service": service,
            "dd_source": "python",
            "dd_tags": f"env:{datadog.env}",
            "provider": "ecs",
        },
        "secretOptions": [{"name": "apikey", "valueFrom": datadog.api_key_secret_arn}],
    }


def log_router(datadog: DatadogLogs, log_configuration: dict[str, Any]) -> dict[str, Any]:
    """The Fluent Bit container FireLens configures; its own logs go to CloudWatch, so a
    router that cannot reach Datadog still says why."""
    return {
        "name": LOG_ROUTER_CONTAINER,
        "image": datadog.router_image,
        "essential": True,
        "cpu": 0,
        # Fluent Bit runs as the image's user and writes its generated configuration and
        # buffers on its root filesystem.
        "readonlyRootFilesystem": False,
        "portMappings": [],
        "environment": [],
        "secrets": [],
        "mountPoints": [],
        "volumesFrom": [],
        "systemControls": [],
        "firelensConfiguration": {
            "type": "fluentbit",
            "options": {"enable-ecs-log-metadata": "true"},
        },
        "logConfiguration": log_configuration,
    }
