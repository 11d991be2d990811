"""The benchmark drives a real private stack and reports every ratio against its baseline."""

import asyncio
from typing import Any

import pytest

from mailstack_stack.bench import measure

pytestmark = pytest.mark.integration


def test_measures_intake_delivery_and_memory_against_their_baselines(stack_factory: Any) -> None:
    stack = stack_factory({"processor": {"RECEIVE_WAIT_SECONDS": "1"}})

    result = asyncio.run(measure(stack, requests=20, concurrency=4))

    ratios = result["ratios"]
    assert set(ratios) == {
        "intake_vs_healthz_throughput",
        "intake_vs_healthz_p95_latency",
        "delivered_vs_accepted_throughput",
        "gateway_rss_after_vs_before",
        "processor_rss_after_vs_before",
    }
    assert all(value > 0 for value in ratios.values())
    assert result["absolute"]["intake"]["requests"] == 20
    # measure() returns only after every accepted email was SENT.
    assert result["absolute"]["delivered_per_second"] > 0
