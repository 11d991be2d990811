"""RDS Postgres: a Multi-AZ primary, read replicas, users, parameter group, logs and alarms."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from mailstack_infra.connections import ConnectionBudget, instance_memory_bytes
from mailstack_infra.iam import trust_policy
from mailstack_infra.observability import Threshold, alarm

DATABASE_NAME = "mailstack"
# The master user runs the migrations only; the services and jobs connect as the app user,
# which the migration task creates with DML rights and nothing else.
MASTER_USER = "mailstack"
APP_USER = "mailstack_app"
POSTGRES_PORT = 5432
LOG_EXPORTS = ["postgresql", "upgrade"]
FREE_STORAGE_ALARM_BYTES = 2 * 1024**3
FREE_MEMORY_ALARM_SHARE = 0.1
# An instance class the program cannot size: alarm below a tenth of 2 GiB.
UNKNOWN_CLASS_MEMORY_BYTES = 2 * 1024**3
LATENCY_ALARM_SECONDS = 0.02
REPLICA_LAG_ALARM_SECONDS = 60
# Every connection verifies the server's certificate and host name. The CA file comes from the
# client's PGSSLROOTCERT (the task definitions and the Lambdas set it), so one URL serves both.
TLS_QUERY = "sslmode=verify-full"


@dataclass(frozen=True)
class DatabaseArgs:
    """What the database needs to know."""

    prefix: str
    engine_major: str
    instance_class: str
    allocated_storage: int
    max_allocated_storage: int
    multi_az: bool
    backup_retention_days: int
    replica_count: int
    deletion_protection: bool
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    availability_zones: Sequence[str]
    log_retention_days: int
    partition: pulumi.Input[str]
    account_id: pulumi.Input[str]
    alarm_topic_arn: pulumi.Input[str]
    budget: ConnectionBudget
    secret_recovery_window_days: int
    # protect + retain_on_delete on the primary and its secrets (production).
    protect: bool = False


def sqlalchemy_url(user: str, password: str, host: str) -> str:
    """A URL as the services read it (DATABASE_URL, DATABASE_READ_URL): TLS, verified."""
    return (
        f"postgresql+psycopg://{user}:{password}@{host}:{POSTGRES_PORT}/{DATABASE_NAME}?{TLS_QUERY}"
    )


class Database(pulumi.ComponentResource):
    """Postgres with the password generated here and kept in Secrets Manager, not by RDS.

    RDS cannot create read replicas of an instance whose password it manages itself
    (`manage_master_user_password`), hence the generated one.
    """

    primary: aws.rds.Instance
    replicas: list[aws.rds.Instance]
    app_password: random.RandomPassword
    # The master's URL, for the migration task only, straight to the primary.
    admin_url_secret: aws.secretsmanager.Secret
    # {"username", "password"} of the app user, as RDS Proxy reads its credentials.
    app_credentials_secret: aws.secretsmanager.Secret
    # The app user's URL on the first replica, for reads (None without replicas).
    replica_url: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:database:Database", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        identifier = f"{args.prefix}-db"
        kept = pulumi.ResourceOptions(
            parent=self, protect=args.protect, retain_on_delete=args.protect
        )

        # Letters and digits only: the passwords go into URLs unescaped.
        password = random.RandomPassword(f"{name}-password", length=32, special=False, opts=child)
        self.app_password = random.RandomPassword(
            f"{name}-app-password", length=32, special=False, opts=child
        )
        # Changes whenever the instance is replaced, so a new final snapshot never collides
        # with the one the old instance left behind.
        snapshot_suffix = random.RandomId(
            f"{name}-final-snapshot",
            byte_length=4,
            keepers={"identifier": identifier, "engine": args.engine_major},
            opts=child,
        )
        subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets",
            name=f"{args.prefix}-db",
            subnet_ids=list(args.subnet_ids),
            opts=child,
        )
        parameters = aws.rds.ParameterGroup(
            f"{name}-parameters",
            name_prefix=f"{args.prefix}-pg{args.engine_major}-",
            family=f"postgres{args.engine_major}",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1"),
                aws.rds.ParameterGroupParameterArgs(name="log_min_duration_statement", value="500"),
                # Explicit, so the proxy's share, the pools and the alarm all know the number.
                aws.rds.ParameterGroupParameterArgs(
                    name="max_connections",
                    value=str(args.budget.max_connections),
                    apply_method="pending-reboot",
                ),
            ],
            opts=pulumi.ResourceOptions(parent=self, replace_on_changes=["family"]),
        )
        monitoring_role = aws.iam.Role(
            f"{name}-monitoring",
            assume_role_policy=trust_policy(
                "monitoring.rds.amazonaws.com", source_account=args.account_id
            ),
            opts=child,
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-monitoring",
            role=monitoring_role.name,
            policy_arn=pulumi.Output.concat(
                "arn:",
                args.partition,
                ":iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole",
            ),
            opts=child,
        )

        def log_groups(instance_id: str) -> list[aws.cloudwatch.LogGroup]:
            # Created before RDS would create them without a retention period.
            return [
                aws.cloudwatch.LogGroup(
                    f"{name}-{instance_id}-{export}",
                    name=f"/aws/rds/instance/{instance_id}/{export}",
                    retention_in_days=args.log_retention_days,
                    opts=child,
                )
                for export in LOG_EXPORTS
            ]

        common: dict[str, Any] = {
            "instance_class": args.instance_class,
            "storage_encrypted": True,
            "publicly_accessible": False,
            "vpc_security_group_ids": [args.security_group_id],
            "parameter_group_name": parameters.name,
            "performance_insights_enabled": True,
            "performance_insights_retention_period": 7,
            "monitoring_interval": 60,
            "monitoring_role_arn": monitoring_role.arn,
            "enabled_cloudwatch_logs_exports": LOG_EXPORTS,
            "auto_minor_version_upgrade": True,
            "copy_tags_to_snapshot": True,
            "deletion_protection": args.deletion_protection,
        }
        self.primary = aws.rds.Instance(
            f"{name}-primary",
            identifier=identifier,
            engine="postgres",
            engine_version=args.engine_major,
            db_name=DATABASE_NAME,
            username=MASTER_USER,
            password=password.result,
            port=POSTGRES_PORT,
            db_subnet_group_name=subnet_group.name,
            multi_az=args.multi_az,
            storage_type="gp3",
            allocated_storage=args.allocated_storage,
            max_allocated_storage=args.max_allocated_storage,
            backup_retention_period=args.backup_retention_days,
            backup_window="02:00-03:00",
            maintenance_window="sun:03:30-sun:04:30",
            skip_final_snapshot=False,
            final_snapshot_identifier=pulumi.Output.concat(
                identifier, "-final-", snapshot_suffix.hex
            ),
            **common,
            opts=pulumi.ResourceOptions.merge(
                kept, pulumi.ResourceOptions(depends_on=log_groups(identifier))
            ),
        )

        self.replicas = []
        for index in range(args.replica_count):
            replica_id = f"{identifier}-replica-{index + 1}"
            zone = args.availability_zones[(index + 1) % len(args.availability_zones)]
            self.replicas.append(
                aws.rds.Instance(
                    f"{name}-replica-{index + 1}",
                    identifier=replica_id,
                    replicate_source_db=self.primary.identifier,
                    availability_zone=zone,
                    multi_az=False,
                    storage_type="gp3",
                    max_allocated_storage=args.max_allocated_storage,
                    # A replica has no snapshot of its own to keep; the primary holds the data.
                    skip_final_snapshot=True,
                    backup_retention_period=0,
                    **common,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=log_groups(replica_id)),
                )
            )

        def secret(
            key: str, description: str, value: pulumi.Input[str]
        ) -> aws.secretsmanager.Secret:
            created = aws.secretsmanager.Secret(
                f"{name}-{key}",
                name=f"{args.prefix}/{key}",
                description=description,
                recovery_window_in_days=args.secret_recovery_window_days,
                opts=kept,
            )
            aws.secretsmanager.SecretVersion(
                f"{name}-{key}",
                secret_id=created.id,
                secret_string=pulumi.Output.secret(value),
                opts=child,
            )
            return created

        self.admin_url_secret = secret(
            "database-admin-url",
            "The master user's URL of the primary: for the migration task only",
            pulumi.Output.all(password.result, self.primary.address).apply(
                lambda values: sqlalchemy_url(MASTER_USER, values[0], values[1])
            ),
        )
        self.app_credentials_secret = secret(
            "database-app-credentials",
            "The app user's name and password, as RDS Proxy reads them",
            self.app_password.result.apply(
                lambda value: json.dumps({"username": APP_USER, "password": value})
            ),
        )
        self.replica_url = (
            pulumi.Output.secret(
                pulumi.Output.all(self.app_password.result, self.replicas[0].address).apply(
                    lambda values: sqlalchemy_url(APP_USER, values[0], values[1])
                )
            )
            if self.replicas
            else None
        )

        instances = [
            ("primary", self.primary),
            *((f"replica-{i + 1}", r) for i, r in enumerate(self.replicas)),
        ]
        for label, instance in instances:
            dimensions = {"DBInstanceIdentifier": instance.identifier}
            alarm(
                f"{name}-{label}-cpu",
                description=f"Postgres {label} CPU above 80% for 15 minutes",
                namespace="AWS/RDS",
                metric="CPUUtilization",
                dimensions=dimensions,
                when=Threshold(80),
                topic_arn=args.alarm_topic_arn,
                parent=self,
            )
            alarm(
                f"{name}-{label}-storage",
                description=f"Postgres {label} has less than 2 GiB free storage",
                namespace="AWS/RDS",
                metric="FreeStorageSpace",
                dimensions=dimensions,
                when=Threshold(
                    FREE_STORAGE_ALARM_BYTES, statistic="Minimum", comparison="LessThanThreshold"
                ),
                topic_arn=args.alarm_topic_arn,
                parent=self,
            )
            connections = args.budget.alarm_threshold
            alarm(
                f"{name}-{label}-connections",
                description=(
                    f"Postgres {label} holds more than {connections} of its "
                    f"{args.budget.max_connections} connections"
                ),
                namespace="AWS/RDS",
                metric="DatabaseConnections",
                dimensions=dimensions,
                when=Threshold(connections, statistic="Maximum"),
                topic_arn=args.alarm_topic_arn,
                parent=self,
            )
            memory = instance_memory_bytes(args.instance_class) or UNKNOWN_CLASS_MEMORY_BYTES
            free_memory = memory * FREE_MEMORY_ALARM_SHARE
            alarm(
                f"{name}-{label}-memory",
                description=f"Postgres {label} has less than 10% of its memory free",
                namespace="AWS/RDS",
                metric="FreeableMemory",
                dimensions=dimensions,
                when=Threshold(
                    int(free_memory), statistic="Minimum", comparison="LessThanThreshold"
                ),
                topic_arn=args.alarm_topic_arn,
                parent=self,
            )
            for direction in ("Read", "Write"):
                alarm(
                    f"{name}-{label}-{direction.lower()}-latency",
                    description=(
                        f"Postgres {label} {direction.lower()}s take over "
                        f"{int(LATENCY_ALARM_SECONDS * 1000)} ms for 15 minutes"
                    ),
                    namespace="AWS/RDS",
                    metric=f"{direction}Latency",
                    dimensions=dimensions,
                    when=Threshold(LATENCY_ALARM_SECONDS),
                    topic_arn=args.alarm_topic_arn,
                    parent=self,
                )
        for index, replica in enumerate(self.replicas):
            alarm(
                f"{name}-replica-{index + 1}-lag",
                description="A read replica lags the primary by more than a minute",
                namespace="AWS/RDS",
                metric="ReplicaLag",
                dimensions={"DBInstanceIdentifier": replica.identifier},
                when=Threshold(
                    REPLICA_LAG_ALARM_SECONDS, statistic="Maximum", period=60, evaluation_periods=5
                ),
                topic_arn=args.alarm_topic_arn,
                parent=self,
            )

        self.register_outputs(
            {
                "primary_endpoint": self.primary.endpoint,
                "replica_endpoints": [replica.endpoint for replica in self.replicas],
            }
        )
