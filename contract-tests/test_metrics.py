"""The services' /metrics (gateway, processor, webhook dispatcher) expose every metric
docs/operations.md lists, and count one email."""

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.metrics_core import Metric as Family
from prometheus_client.parser import text_string_to_metric_families

from email_flows import SENT_OR_LATER, submit, wait_for_final
from mailstack_testing.external import ExternalStack

pytestmark = pytest.mark.e2e

OPERATIONS_DOC = Path(__file__).parents[1] / "docs" / "operations.md"
_ROW = re.compile(
    r"^\| `(mailstack_(gateway|processor|dispatcher)_\w+)` \| (counter|gauge|histogram) \|",
    re.M,
)


def documented_metrics() -> list[tuple[str, str, str]]:
    """(name, service, type) of each metric in docs/operations.md's table: the contract."""
    table = OPERATIONS_DOC.read_text().split("<!-- metrics:start")[1].split("<!-- metrics:end")[0]
    rows = [(m.group(1), m.group(2), m.group(3)) for m in _ROW.finditer(table)]
    assert len(rows) == table.count("| `mailstack_"), "a metrics row the test cannot read"
    return rows


def metrics_url(stack: Any, service: str) -> str:
    """The /metrics of the processor or the dispatcher (their health ports)."""
    if isinstance(stack, ExternalStack):
        name = f"{service.upper()}_METRICS_URL"
        url = stack.get(name)
        if url is None:
            pytest.skip(f"--stack=external: {name} (the {service}'s health port)")
        return url
    config = stack.stack.config
    return f"{config.url(getattr(config.ports, f'{service}_health'))}/metrics"


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
    assert wait_for_final(gateway, email_id)["status"] in SENT_OR_LATER

    response = gateway.get("/metrics")
    assert response.status_code == 200, response.text
    exposed = {"gateway": families(response.text)}
    for service in ("processor", "dispatcher"):
        scraped = httpx.get(metrics_url(stack, service), timeout=10)
        assert scraped.status_code == 200
        exposed[service] = families(scraped.text)

    documented = documented_metrics()
    assert {service for _, service, _ in documented} == {"gateway", "processor", "dispatcher"}
    for name, service, kind in documented:
        family = exposed[service].get(name)
        assert family is not None, f"{name} is documented but not exposed"
        assert family.type == kind, name

    by_gateway = exposed["gateway"]
    assert value(by_gateway["mailstack_gateway_emails_accepted_total"]) >= 1
    requests = by_gateway["mailstack_gateway_request_seconds"]
    assert value(requests, "_count", route="/v1/emails", status="202") >= 1
    assert value(by_gateway["mailstack_gateway_outbox_depth"]) >= 0

    by_processor = exposed["processor"]
    sends = by_processor["mailstack_processor_sends_total"]
    assert value(sends, provider="elasticemail", outcome="sent") >= 1
    latency = by_processor["mailstack_processor_provider_seconds"]
    assert value(latency, "_count", provider="elasticemail") >= 1
    breaker_open = by_processor["mailstack_processor_breaker_open"]
    assert value(breaker_open, provider="elasticemail") == 0
    assert value(by_processor["mailstack_processor_queue_lag_seconds"]) >= 0
