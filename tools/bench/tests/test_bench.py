"""The benchmark drives a real private stack with wrk and reports every target it measures."""

from typing import Any

import pytest

from mailstack_bench.bench import TARGETS, _counted_over, measure, render

pytestmark = pytest.mark.integration


def test_measures_every_target_against_its_baseline(stack_factory: Any) -> None:
    stack = stack_factory(
        {"gateway": {"RATE_LIMIT_SEND_PER_MINUTE": "1000000"}},
    )

    result = measure(stack, stack.stack.config.python, seconds=1, connections=4)

    assert set(result["targets"]) == set(TARGETS)
    assert all(row["measured"] > 0 for row in result["targets"].values())
    absolute = result["absolute"]
    # Every load ran and was answered as the endpoint answers a valid request.
    assert set(absolute["bare_post"]["statuses"]) == {"202"}
    assert set(absolute["gateway_post"]["statuses"]) == {"202"}
    assert set(absolute["gateway_healthz"]["statuses"]) == {"200"}
    assert set(absolute["gateway_post_half_rate"]["statuses"]) == {"202"}
    # The gateway's histogram, scraped around the half-rate load, counted every accept of it.
    half_accepts = absolute["gateway_post_half_rate"]["statuses"]["202"]
    assert absolute["half_rate_accepts_in_gateway"] >= half_accepts > 0
    over = absolute["half_rate_accepts_over_50ms_in_gateway"]
    assert 0 <= over <= absolute["half_rate_accepts_in_gateway"]
    # measure() returns only after every accepted email was SENT.
    assert absolute["backlog"] >= absolute["gateway_post"]["requests"]
    # Both failover runs delivered their emails (measure_failover waits for every SENT row).
    assert absolute["secondary_alone_p95_ms"] > 0
    assert absolute["primary_hanging_p95_ms"] > 0
    # The CPU of each phase, by process: the services' own, and the servers they use.
    cpu = result["cpu_ms"]
    assert cpu["intake"]["gateway"] > 0
    assert cpu["intake"]["postgres"] > 0
    assert cpu["drain"]["processor"] > 0
    assert cpu["drain"]["postgres"] > 0
    assert cpu["drain"]["total"] > cpu["drain"]["processor"]
    # (LocalStack is the test session's here, not one of this stack's processes.)
    assert cpu["baseline_consumer"]["total"] > 0
    assert absolute["bare_app_cpu_ms_per_post"] > 0
    rendered = render(result)
    assert "intake throughput / bare FastAPI POST" in rendered
    assert "per email sent (drain):" in rendered
    assert "gateway_post_half_rate" in rendered
    # The half-rate load begins once the maximum-rate load's emails are all published.
    assert (
        f"outbox after the maximum-rate load: {absolute['outbox_after_intake']} emails, "
        f"published within {absolute['outbox_catch_up_seconds']:.1f} s"
    ) in rendered


def test_counts_what_a_histogram_saw_between_two_scrapes_and_over_a_bound() -> None:
    before = {0.025: 5.0, 0.05: 10.0, float("inf"): 12.0}
    after = {0.025: 30.0, 0.05: 50.0, float("inf"): 60.0}
    assert _counted_over(before, after, 0.05) == (48, 8)
    assert _counted_over(before, after, 0.025) == (48, 23)
    assert _counted_over(after, after, 0.05) == (0, 0)
