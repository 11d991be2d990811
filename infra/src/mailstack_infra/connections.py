"""Postgres connection budget: max_connections from the instance class, and pools that fit it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mailstack_infra.settings import ConfigError, ServiceSizing

# RDS's default is LEAST(DBInstanceClassMemory / 9531392, 5000), where DBInstanceClassMemory is
# the class's memory less what RDS keeps for itself. The program sets max_connections
# explicitly (so the alarm and the pools know the number) from the nominal memory, with a
# quarter set aside for that reserve: 84 on 1 GiB, 675 on 8 GiB.
BYTES_PER_CONNECTION = 9_531_392
MEMORY_SHARE = 0.75
MAX_CONNECTIONS_CEILING = 5000
# The proxy may open this share of max_connections; the rest stays for the migration task,
# the gateway's replica reads of a lagging failover, and an operator's psql.
PROXY_MAX_CONNECTIONS_PERCENT = 75
# Alarm above this share: beyond anything the proxy alone may open.
ALARM_SHARE = 0.8
# Connections the scheduled jobs may hold through the proxy (one each, no pool, a retry
# overlapping a late run).
JOBS_CONNECTIONS = 4
# The webhook dispatcher: DISPATCHER_MAX_TASKS tasks, each with a pool of DISPATCHER_POOL_SIZE
# and up to DISPATCHER_MAX_OVERFLOW more; reserved, like the jobs', before the pools are sized.
DISPATCHER_MAX_TASKS = 1
DISPATCHER_POOL_SIZE = 2
DISPATCHER_MAX_OVERFLOW = 2
# A rolling deployment runs old and new tasks side by side (maximum percent 200).
DEPLOYMENT_OVERLAP = 2
DISPATCHER_CONNECTIONS = (
    DEPLOYMENT_OVERLAP * DISPATCHER_MAX_TASKS * (DISPATCHER_POOL_SIZE + DISPATCHER_MAX_OVERFLOW)
)
# What each task's pool holds when the database has room: the services' own defaults.
DEFAULT_POOL_SIZE = 20
MIN_POOL_SIZE = 2

GIB = 1024**3
# Memory per vCPU of the general-purpose and memory-optimised families (m: 4 GiB, r/x: 8+).
MEMORY_PER_VCPU_GIB = {"m": 4, "r": 8, "x": 16, "z": 8}
# Burstable classes do not follow the per-vCPU rule.
BURSTABLE_GIB = {"micro": 1, "small": 2, "medium": 4, "large": 8, "xlarge": 16, "2xlarge": 32}
INSTANCE_CLASS = re.compile(
    r"^db\.(?P<family>[a-z])\d+[a-z-]*\.(?P<size>[0-9]*x?large|micro|small|medium)$"
)


def instance_memory_bytes(instance_class: str) -> int | None:
    """The nominal memory of an RDS instance class (db.t4g.micro: 1 GiB, db.m7g.large: 8 GiB),
    or None for a class this table does not know."""
    match = INSTANCE_CLASS.match(instance_class)
    if match is None:
        return None
    family, size = match["family"], match["size"]
    if family == "t":
        return BURSTABLE_GIB[size] * GIB
    if family not in MEMORY_PER_VCPU_GIB or size in ("micro", "small", "medium"):
        return None
    multiple = size.removesuffix("xlarge")
    vcpus = 2 if size == "large" else 4 * int(multiple or "1")
    return vcpus * MEMORY_PER_VCPU_GIB[family] * GIB


def max_connections(instance_class: str, override: int | None = None) -> int:
    """The max_connections the parameter group sets."""
    if override is not None:
        return override
    memory = instance_memory_bytes(instance_class)
    if memory is None:
        raise ConfigError(
            f"cannot size connections for {instance_class!r}: set mailstack:dbMaxConnections"
        )
    return min(MAX_CONNECTIONS_CEILING, math.floor(memory * MEMORY_SHARE / BYTES_PER_CONNECTION))


@dataclass(frozen=True)
class ConnectionBudget:
    """How many connections each part may hold, at most, so that together they fit."""

    max_connections: int
    gateway_pool: int
    processor_pool: int

    @property
    def proxy_connections(self) -> int:
        """What the proxy may open on the primary."""
        return self.max_connections * PROXY_MAX_CONNECTIONS_PERCENT // 100

    @property
    def alarm_threshold(self) -> int:
        return math.floor(self.max_connections * ALARM_SHARE)


def plan_connections(
    max_connections: int, gateway: ServiceSizing, processor: ServiceSizing
) -> ConnectionBudget:
    """Per-task pools such that every task at maximum scale, twice over during a deployment,
    fits what the proxy may open even if each client session is pinned to a database
    connection (psycopg's server-side prepared statements pin them). The gateway's read pool,
    on a replica with the same max_connections, fits the same share."""
    proxy = max_connections * PROXY_MAX_CONNECTIONS_PERCENT // 100
    tasks = DEPLOYMENT_OVERLAP * (gateway.max_tasks + processor.max_tasks)
    pool = min(DEFAULT_POOL_SIZE, (proxy - JOBS_CONNECTIONS - DISPATCHER_CONNECTIONS) // tasks)
    if pool < MIN_POOL_SIZE:
        raise ConfigError(
            f"max_connections {max_connections} leaves {pool} connection(s) per task for "
            f"{gateway.max_tasks} gateway and {processor.max_tasks} processor tasks at most: "
            "choose a larger mailstack:dbInstanceClass or fewer maxTasks"
        )
    return ConnectionBudget(max_connections=max_connections, gateway_pool=pool, processor_pool=pool)
