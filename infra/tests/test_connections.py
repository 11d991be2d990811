"""The connection budget: max_connections from the instance class, pools that fit it."""

from __future__ import annotations

import pytest

from mailstack_infra.connections import (
    DEPLOYMENT_OVERLAP,
    JOBS_CONNECTIONS,
    instance_memory_bytes,
    max_connections,
    plan_connections,
)
from mailstack_infra.settings import ConfigError, ServiceSizing

GIB = 1024**3


@pytest.mark.parametrize(
    ("instance_class", "gib"),
    [
        ("db.t4g.micro", 1),
        ("db.t3.medium", 4),
        ("db.m7g.large", 8),
        ("db.m6i.2xlarge", 32),
        ("db.r6g.large", 16),
        ("db.r7g.4xlarge", 128),
    ],
)
def test_instance_memory_follows_the_class(instance_class: str, gib: int) -> None:
    assert instance_memory_bytes(instance_class) == gib * GIB


def test_max_connections_is_rds_formula_on_three_quarters_of_the_memory() -> None:
    assert max_connections("db.t4g.micro") == 84
    assert max_connections("db.m7g.large") == 675
    assert max_connections("db.r7g.16xlarge") == 5000


def test_an_unknown_class_needs_an_explicit_max_connections() -> None:
    with pytest.raises(ConfigError, match="mailstack:dbMaxConnections"):
        max_connections("db.z9q.enormous")
    assert max_connections("db.z9q.enormous", override=300) == 300


@pytest.mark.parametrize(
    ("limit", "gateway", "processor"),
    [
        (84, ServiceSizing(256, 512, 2, 4), ServiceSizing(256, 512, 1, 4)),
        (675, ServiceSizing(512, 1024, 3, 12), ServiceSizing(512, 1024, 2, 20)),
        (5000, ServiceSizing(512, 1024, 3, 12), ServiceSizing(512, 1024, 2, 20)),
    ],
)
def test_every_pool_at_full_scale_during_a_deployment_fits_the_proxys_share(
    limit: int, gateway: ServiceSizing, processor: ServiceSizing
) -> None:
    budget = plan_connections(limit, gateway, processor)
    demand = DEPLOYMENT_OVERLAP * (
        gateway.max_tasks * budget.gateway_pool + processor.max_tasks * budget.processor_pool
    )
    assert demand + JOBS_CONNECTIONS <= budget.proxy_connections
    assert budget.proxy_connections < budget.alarm_threshold < limit
    assert 2 <= budget.gateway_pool <= 20


def test_too_many_tasks_for_the_instance_fail_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="choose a larger mailstack:dbInstanceClass"):
        plan_connections(84, ServiceSizing(256, 512, 2, 12), ServiceSizing(256, 512, 1, 20))
