"""ElastiCache (Valkey): the gateway's shared rate-limit counters, their secret URL and alarms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from mailstack_infra.firewall import REDIS_PORT
from mailstack_infra.observability import Threshold, alarm

ENGINE = "valkey"
# The gateway's redis-py client reads database 0; TLS is required, hence rediss://.
DATABASE_INDEX = 0
# ElastiCache refuses longer replication group ids.
MAX_GROUP_ID_LENGTH = 40
LOG_TYPES = ("slow-log", "engine-log")
# Counters live for one rate-limit window (a minute): a day of snapshots is enough to restore
# the group itself, and no final snapshot is worth keeping.
SNAPSHOT_RETENTION_DAYS = 1
# Both windows avoid the database's (backups 02:00-03:00, maintenance Sun 03:30-04:30) and each
# other, as ElastiCache requires.
SNAPSHOT_WINDOW = "00:30-01:30"
MAINTENANCE_WINDOW = "sun:05:00-sun:06:00"
REPLICATION_LAG_ALARM_SECONDS = 10


@dataclass(frozen=True)
class CacheArgs:
    """What the cache needs to know."""

    prefix: str
    engine_version: str
    node_type: str
    node_count: int
    multi_az: bool
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    availability_zones: Sequence[str]
    log_retention_days: int
    secret_recovery_window_days: int
    alarm_topic_arn: pulumi.Input[str]
    # protect + retain_on_delete on the URL's secret (production).
    protect: bool = False


def redis_url(token: str, host: str) -> str:
    """The URL the gateway reads from REDIS_URL: TLS, the AUTH token as the password."""
    return f"rediss://:{token}@{host}:{REDIS_PORT}/{DATABASE_INDEX}"


def member_cluster_ids(group_id: str, node_count: int) -> list[str]:
    """The node ids ElastiCache gives a cluster-mode-disabled group: `<group>-001`, ...

    Known before the group exists, so the per-node alarms need no `apply`.
    """
    return [f"{group_id}-{index:03d}" for index in range(1, node_count + 1)]


class Cache(pulumi.ComponentResource):
    """A Valkey replication group, encrypted at rest and in transit, behind an AUTH token.

    Valkey, not Redis OSS: the same protocol and redis-py client the gateway's `limits` storage
    uses, ElastiCache's current engine (Redis OSS is frozen at 7.1 there), and a lower node
    price; `pulumi_aws` v7 supports it on `elasticache.ReplicationGroup` (`engine="valkey"`, with
    an explicit `engine_version` and a `valkeyN` parameter family).

    Cluster mode stays disabled: the counters are tiny and the `limits` Redis storage talks to
    one primary endpoint, which ElastiCache moves to a replica on failover.

    An AUTH token rather than IAM authentication: IAM tokens expire every 15 minutes and must be
    signed by the client, which a plain `rediss://` URL cannot do. The token is generated here
    and the whole URL is kept in Secrets Manager, so ECS injects it as a secret.
    """

    replication_group: aws.elasticache.ReplicationGroup
    url_secret: aws.secretsmanager.Secret
    node_ids: list[str]

    def __init__(
        self, name: str, args: CacheArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:cache:Cache", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        group_id = f"{args.prefix}-cache"
        if len(group_id) > MAX_GROUP_ID_LENGTH:
            raise ValueError(
                f"replication group id {group_id!r} is longer than {MAX_GROUP_ID_LENGTH} characters"
            )
        major = args.engine_version.split(".")[0]
        self.node_ids = member_cluster_ids(group_id, args.node_count)

        token = random.RandomPassword(
            f"{name}-auth-token",
            length=48,
            # Letters and digits only: ElastiCache refuses some symbols and the token goes into a
            # URL unescaped.
            special=False,
            opts=child,
        )
        subnet_group = aws.elasticache.SubnetGroup(
            f"{name}-subnets",
            name=group_id,
            description="mailstack cache: the private database tier",
            subnet_ids=list(args.subnet_ids),
            opts=child,
        )
        parameters = aws.elasticache.ParameterGroup(
            f"{name}-parameters",
            # The family is in the name: a major upgrade creates a new group before the old one,
            # still in use until the switch, is deleted.
            name=f"{group_id}-{ENGINE}{major}",
            family=f"{ENGINE}{major}",
            description="mailstack rate-limit counters",
            parameters=[
                # Every counter expires with its window; under memory pressure, dropping the one
                # closest to expiry lets a client exceed its limit by the least.
                aws.elasticache.ParameterGroupParameterArgs(
                    name="maxmemory-policy", value="volatile-ttl"
                ),
            ],
            opts=child,
        )
        log_groups = {
            log_type: aws.cloudwatch.LogGroup(
                f"{name}-{log_type}",
                name=f"/{args.prefix}/elasticache/{log_type}",
                retention_in_days=args.log_retention_days,
                opts=child,
            )
            for log_type in LOG_TYPES
        }
        # Spread the nodes over the zones, primary first, so failover crosses an AZ.
        zones = [
            args.availability_zones[index % len(args.availability_zones)]
            for index in range(args.node_count)
        ]

        self.replication_group = aws.elasticache.ReplicationGroup(
            f"{name}-group",
            replication_group_id=group_id,
            description="mailstack gateway rate-limit counters",
            engine=ENGINE,
            engine_version=args.engine_version,
            node_type=args.node_type,
            num_cache_clusters=args.node_count,
            preferred_cache_cluster_azs=zones,
            automatic_failover_enabled=args.multi_az,
            multi_az_enabled=args.multi_az,
            port=REDIS_PORT,
            parameter_group_name=parameters.name,
            subnet_group_name=subnet_group.name,
            security_group_ids=[args.security_group_id],
            at_rest_encryption_enabled=True,
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            auth_token=token.result,
            auto_minor_version_upgrade=True,
            maintenance_window=MAINTENANCE_WINDOW,
            snapshot_window=SNAPSHOT_WINDOW,
            snapshot_retention_limit=SNAPSHOT_RETENTION_DAYS,
            log_delivery_configurations=[
                aws.elasticache.ReplicationGroupLogDeliveryConfigurationArgs(
                    destination=group.name,
                    destination_type="cloudwatch-logs",
                    log_format="json",
                    log_type=log_type,
                )
                for log_type, group in log_groups.items()
            ],
            opts=child,
        )

        self.url_secret = aws.secretsmanager.Secret(
            f"{name}-url",
            name=f"{args.prefix}/redis-url",
            description="REDIS_URL of the gateway (rediss://:<auth token>@<primary>:6379/0)",
            recovery_window_in_days=args.secret_recovery_window_days,
            opts=pulumi.ResourceOptions(
                parent=self, protect=args.protect, retain_on_delete=args.protect
            ),
        )
        url: pulumi.Output[str] = pulumi.Output.secret(
            pulumi.Output.all(token.result, self.replication_group.primary_endpoint_address).apply(
                lambda values: redis_url(values[0], values[1])
            )
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-url",
            secret_id=self.url_secret.id,
            secret_string=url,
            opts=child,
        )

        self._alarms(name, args)
        self.register_outputs(
            {
                "primary_endpoint": self.replication_group.primary_endpoint_address,
                "url_secret_arn": self.url_secret.arn,
            }
        )

    def _alarms(self, name: str, args: CacheArgs) -> None:
        """Per node: CPU (host and the engine's thread), memory, evictions and replication lag."""
        watched: list[tuple[str, str, str, Threshold]] = [
            ("cpu", "host CPU above 80% for 15 minutes", "CPUUtilization", Threshold(80)),
            (
                "engine-cpu",
                "engine thread above 80% for 15 minutes",
                "EngineCPUUtilization",
                Threshold(80),
            ),
            (
                "memory",
                "memory above 80% of maxmemory for 15 minutes",
                "DatabaseMemoryUsagePercentage",
                Threshold(80),
            ),
            # An evicted counter restarts at zero: a client may exceed its rate limit.
            (
                "evictions",
                "evicted keys (rate-limit counters reset early)",
                "Evictions",
                Threshold(0, statistic="Sum", evaluation_periods=1),
            ),
        ]
        if args.node_count > 1:
            # On every node, not only today's replicas: a failover swaps the roles, and a primary
            # reports no lag (missing data does not alarm).
            watched.append(
                (
                    "replication-lag",
                    f"replica lags the primary by more than {REPLICATION_LAG_ALARM_SECONDS} s",
                    "ReplicationLag",
                    Threshold(
                        REPLICATION_LAG_ALARM_SECONDS,
                        statistic="Maximum",
                        period=60,
                        evaluation_periods=5,
                    ),
                )
            )
        for node_id in self.node_ids:
            for kind, description, metric, when in watched:
                alarm(
                    f"{name}-{node_id.rsplit('-', 1)[1]}-{kind}",
                    description=f"Cache node {node_id}: {description}",
                    namespace="AWS/ElastiCache",
                    metric=metric,
                    dimensions={"CacheClusterId": node_id},
                    when=when,
                    topic_arn=args.alarm_topic_arn,
                    parent=self,
                )
