"""Both services' /metrics expose every metric docs/operations.md lists, and count one email."""

from typing import Any

import httpx
import pytest
from prometheus_client.metrics_core import Metric as Family
from prometheus_client.parser import text_string_to_metric_families

from email_flows import submit, wait_for_final
from mailstack_core import metrics
from mailstack_stack.external import ExternalStack

pytestmark = pytest.mark.e2e


def processor_metrics_url(stack: Any) -> str:
    if isinstance(stack, ExternalStack):
        url = stack.get("PROCESSOR_METRICS_URL")
        if url is None:
            pytest.skip("--stack=external: PROCESSOR_METRICS_URL (the processor's health port)")
        return url
    config = stack.stack.config
    return f"{config.url(config.ports.processor_health)}/metrics"


def families(exposition: str) -> dict[str, Family]:
    """By the metric's full name (a counter's with its _total)."""
    parsed = text_string_to_metric_families(exposition)
    return {f"{f.name}_total" if f.type == "counter" else f.name: f for f in parsed}


def value(family: Family, suffix: str = "", **labels: str) -> float:
    matching = [
        sample.value
        for sample in family.samples
        if sample.name.endswith(suffix) and labels.items() <= sample.labels.items()
    ]
    assert matching, f"no sample {family.name}{suffix} {labels}"
    return sum(matching)


def test_both_services_expose_every_documented_metric_and_count_an_email(
    stack: Any, gateway: httpx.Client
) -> None:
    email_id = submit(gateway)
    assert wait_for_final(gateway, email_id)["status"] == "SENT"

    response = gateway.get("/metrics")
    assert response.status_code == 200, response.text
    exposed = {metrics.Service.GATEWAY: families(response.text)}
    scraped = httpx.get(processor_metrics_url(stack), timeout=10)
    assert scraped.status_code == 200
    exposed[metrics.Service.PROCESSOR] = families(scraped.text)

    for metric in metrics.CATALOGUE:
        family = exposed[metric.service].get(metric.name)
        assert family is not None, f"{metric.name} is documented but not exposed"
        assert family.type == metric.kind.value, metric.name

    by_gateway = exposed[metrics.Service.GATEWAY]
    assert value(by_gateway[metrics.GATEWAY_EMAILS_ACCEPTED.name]) >= 1
    requests = by_gateway[metrics.GATEWAY_REQUEST_SECONDS.name]
    assert value(requests, "_count", route="/v1/emails", status="202") >= 1
    assert value(by_gateway[metrics.GATEWAY_OUTBOX_DEPTH.name]) >= 0

    by_processor = exposed[metrics.Service.PROCESSOR]
    sends = by_processor[metrics.PROCESSOR_SENDS.name]
    assert value(sends, provider="elasticemail", outcome="sent") >= 1
    latency = by_processor[metrics.PROCESSOR_PROVIDER_SECONDS.name]
    assert value(latency, "_count", provider="elasticemail") >= 1
    assert value(by_processor[metrics.PROCESSOR_BREAKER_OPEN.name], provider="elasticemail") == 0
    assert value(by_processor[metrics.PROCESSOR_QUEUE_LAG.name]) >= 0
