"""RDS Proxy in front of the primary: what the services and jobs connect to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mailstack_infra.connections import PROXY_MAX_CONNECTIONS_PERCENT
from mailstack_infra.iam import Statement, policy_document, trust_policy

# Clients that stay idle longer are disconnected; the services' pools ping before use.
IDLE_CLIENT_TIMEOUT_SECONDS = 1800
# How long a client waits for a database connection once the proxy holds all it may open.
BORROW_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class DatabaseProxyArgs:
    """What the proxy needs to know."""

    prefix: str
    primary_identifier: pulumi.Input[str]
    credentials_secret_arn: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    account_id: pulumi.Input[str]
    log_retention_days: int


class DatabaseProxy(pulumi.ComponentResource):
    """TLS-only RDS Proxy authenticating the app user from its Secrets Manager credentials.

    The proxy keeps the connection count on the primary bounded however far the services
    scale out (at most PROXY_MAX_CONNECTIONS_PERCENT of max_connections), and holds client
    connections open across a Multi-AZ failover.
    """

    proxy: aws.rds.Proxy

    def __init__(
        self, name: str, args: DatabaseProxyArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:database:DatabaseProxy", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        proxy_name = f"{args.prefix}-db"

        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=trust_policy("rds.amazonaws.com", source_account=args.account_id),
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-role",
            role=role.id,
            policy=policy_document(
                [
                    Statement(
                        actions=["secretsmanager:GetSecretValue"],
                        resources=[args.credentials_secret_arn],
                    )
                ]
            ),
            opts=child,
        )
        # Created before the proxy would create it without a retention period.
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/rds/proxy/{proxy_name}",
            retention_in_days=args.log_retention_days,
            opts=child,
        )
        self.proxy = aws.rds.Proxy(
            f"{name}-proxy",
            name=proxy_name,
            engine_family="POSTGRESQL",
            role_arn=role.arn,
            vpc_subnet_ids=list(args.subnet_ids),
            vpc_security_group_ids=[args.security_group_id],
            require_tls=True,
            idle_client_timeout=IDLE_CLIENT_TIMEOUT_SECONDS,
            debug_logging=False,
            auths=[
                aws.rds.ProxyAuthArgs(
                    auth_scheme="SECRETS",
                    secret_arn=args.credentials_secret_arn,
                    iam_auth="DISABLED",
                    client_password_auth_type="POSTGRES_SCRAM_SHA_256",  # noqa: S106  # a mode
                    description="the services' and jobs' app user",
                )
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy, logs]),
        )
        aws.rds.ProxyDefaultTargetGroup(
            f"{name}-targets",
            db_proxy_name=self.proxy.name,
            connection_pool_config=aws.rds.ProxyDefaultTargetGroupConnectionPoolConfigArgs(
                max_connections_percent=PROXY_MAX_CONNECTIONS_PERCENT,
                max_idle_connections_percent=PROXY_MAX_CONNECTIONS_PERCENT // 2,
                connection_borrow_timeout=BORROW_TIMEOUT_SECONDS,
            ),
            opts=child,
        )
        aws.rds.ProxyTarget(
            f"{name}-primary",
            db_proxy_name=self.proxy.name,
            target_group_name="default",
            db_instance_identifier=args.primary_identifier,
            opts=child,
        )
        self.register_outputs({"endpoint": self.proxy.endpoint})
