"""The public ALB in front of the gateway: target group, listeners, access logs and alarms."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from mailstack_infra.buckets import PrivateBucket, PrivateBucketArgs, expire_after
from mailstack_infra.firewall import GATEWAY_PORT
from mailstack_infra.observability import Threshold, alarm

TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
# The gateway's public readiness probe: fails while the database is unreachable or its
# schema is older than the gateway's code, so such a task never takes traffic.
HEALTH_CHECK_PATH = "/healthz?deep=1"
ACCESS_LOG_PREFIX = "alb"
ACCESS_LOG_DAYS = 90
# The ALB closes a connection idle this long; the gateway keeps connections open longer, so it
# is always the ALB that closes them (else a request can race the close: a 502).
IDLE_TIMEOUT_SECONDS = 60
# Admin-only routes of the gateway that have no business on the internet at all.
INTERNAL_PATHS = ("/metrics", "/metrics/*", "/docs", "/docs/*", "/openapi.json")
# The ELB log delivery service principal, valid in every region (the per-region ELB accounts
# are the legacy way and do not exist in regions opened since August 2022).
LOG_DELIVERY_PRINCIPAL = "logdelivery.elasticloadbalancing.amazonaws.com"
RESPONSE_TIME_P99_ALARM_SECONDS = 1.0


@dataclass(frozen=True)
class LoadBalancerArgs:
    """What the load balancer needs to know."""

    prefix: str
    vpc_id: pulumi.Input[str]
    public_subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    certificate_arn: str | None
    deletion_protection: bool
    account_id: pulumi.Input[str]
    partition: pulumi.Input[str]
    alarm_topic_arn: pulumi.Input[str]


def access_log_statement(bucket: str, account_id: str, partition: str) -> dict[str, Any]:
    """The bucket policy statement that lets the ALB deliver its access logs."""
    return {
        "Sid": "AllowAlbAccessLogs",
        "Effect": "Allow",
        "Principal": {"Service": LOG_DELIVERY_PRINCIPAL},
        "Action": "s3:PutObject",
        "Resource": f"arn:{partition}:s3:::{bucket}/{ACCESS_LOG_PREFIX}/AWSLogs/{account_id}/*",
    }


class LoadBalancer(pulumi.ComponentResource):
    """Internet-facing ALB across the public subnets; HTTPS when a certificate is configured."""

    alb: aws.lb.LoadBalancer
    target_group: aws.lb.TargetGroup
    listeners: list[aws.lb.Listener]

    def __init__(
        self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:edge:LoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        log_bucket_name = pulumi.Output.concat(args.prefix, "-alb-logs-", args.account_id)
        logs = PrivateBucket(
            f"{name}-logs",
            PrivateBucketArgs(
                bucket_name=log_bucket_name,
                lifecycle_rules=[expire_after(ACCESS_LOG_DAYS)],
                sse_algorithm="AES256",
                extra_policy_statements=[
                    pulumi.Output.all(log_bucket_name, args.account_id, args.partition).apply(
                        lambda values: access_log_statement(values[0], values[1], values[2])
                    )
                ],
            ),
            opts=child,
        )

        self.alb = aws.lb.LoadBalancer(
            f"{name}-alb",
            name=f"{args.prefix}-alb",
            load_balancer_type="application",
            internal=False,
            subnets=list(args.public_subnet_ids),
            security_groups=[args.security_group_id],
            drop_invalid_header_fields=True,
            enable_deletion_protection=args.deletion_protection,
            enable_http2=True,
            idle_timeout=IDLE_TIMEOUT_SECONDS,
            access_logs=aws.lb.LoadBalancerAccessLogsArgs(
                bucket=logs.bucket.bucket, prefix=ACCESS_LOG_PREFIX, enabled=True
            ),
            # The ALB checks that it may write to the bucket when logging is switched on.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[logs.policy]),
        )
        self.target_group = aws.lb.TargetGroup(
            f"{name}-gateway",
            name_prefix="gw-",
            port=GATEWAY_PORT,
            protocol="HTTP",
            target_type="ip",
            vpc_id=args.vpc_id,
            deregistration_delay=20,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                enabled=True,
                path=HEALTH_CHECK_PATH,
                port="traffic-port",
                protocol="HTTP",
                matcher="200",
                interval=15,
                timeout=5,
                healthy_threshold=2,
                unhealthy_threshold=3,
            ),
            opts=child,
        )

        forward = aws.lb.ListenerDefaultActionArgs(
            type="forward", target_group_arn=self.target_group.arn
        )
        if args.certificate_arn:
            https = aws.lb.Listener(
                f"{name}-https",
                load_balancer_arn=self.alb.arn,
                port=443,
                protocol="HTTPS",
                ssl_policy=TLS_POLICY,
                certificate_arn=args.certificate_arn,
                default_actions=[forward],
                opts=child,
            )
            http = aws.lb.Listener(
                f"{name}-http",
                load_balancer_arn=self.alb.arn,
                port=80,
                protocol="HTTP",
                default_actions=[
                    aws.lb.ListenerDefaultActionArgs(
                        type="redirect",
                        redirect=aws.lb.ListenerDefaultActionRedirectArgs(
                            port="443", protocol="HTTPS", status_code="HTTP_301"
                        ),
                    )
                ],
                opts=child,
            )
            self.listeners = [https, http]
        else:
            self.listeners = [
                aws.lb.Listener(
                    f"{name}-http",
                    load_balancer_arn=self.alb.arn,
                    port=80,
                    protocol="HTTP",
                    default_actions=[forward],
                    opts=child,
                )
            ]
        # On the listener that forwards (the other one only redirects to it).
        aws.lb.ListenerRule(
            f"{name}-internal-paths",
            listener_arn=self.listeners[0].arn,
            priority=1,
            conditions=[
                aws.lb.ListenerRuleConditionArgs(
                    path_pattern=aws.lb.ListenerRuleConditionPathPatternArgs(
                        values=list(INTERNAL_PATHS)
                    )
                )
            ],
            actions=[
                aws.lb.ListenerRuleActionArgs(
                    type="fixed-response",
                    fixed_response=aws.lb.ListenerRuleActionFixedResponseArgs(
                        content_type="application/json",
                        status_code="404",
                        message_body=json.dumps(
                            {"error": "not_found", "message": "no such resource"}
                        ),
                    ),
                )
            ],
            opts=child,
        )

        alb_dimension = {"LoadBalancer": self.alb.arn_suffix}
        alarm(
            f"{name}-elb-5xx",
            description="The ALB itself answers 5xx (no healthy gateway, or overload)",
            namespace="AWS/ApplicationELB",
            metric="HTTPCode_ELB_5XX_Count",
            dimensions=alb_dimension,
            when=Threshold(10, statistic="Sum", period=60, evaluation_periods=3),
            topic_arn=args.alarm_topic_arn,
            parent=self,
        )
        alarm(
            f"{name}-target-5xx",
            description="The gateway answers 5xx (database down, bugs)",
            namespace="AWS/ApplicationELB",
            metric="HTTPCode_Target_5XX_Count",
            dimensions=alb_dimension,
            when=Threshold(10, statistic="Sum", period=60, evaluation_periods=3),
            topic_arn=args.alarm_topic_arn,
            parent=self,
        )
        alarm(
            f"{name}-unhealthy-hosts",
            description="Gateway tasks fail the load balancer's health check",
            namespace="AWS/ApplicationELB",
            metric="UnHealthyHostCount",
            dimensions={
                "LoadBalancer": self.alb.arn_suffix,
                "TargetGroup": self.target_group.arn_suffix,
            },
            when=Threshold(0, statistic="Maximum", period=60, evaluation_periods=3),
            topic_arn=args.alarm_topic_arn,
            parent=self,
        )

        alarm(
            f"{name}-response-time-p99",
            description=(
                f"The slowest 1% of gateway responses take over {RESPONSE_TIME_P99_ALARM_SECONDS} s"
            ),
            namespace="AWS/ApplicationELB",
            metric="TargetResponseTime",
            dimensions=alb_dimension,
            when=Threshold(
                RESPONSE_TIME_P99_ALARM_SECONDS, statistic="p99", period=60, evaluation_periods=5
            ),
            topic_arn=args.alarm_topic_arn,
            parent=self,
        )

        self.register_outputs(
            {
                "dns_name": self.alb.dns_name,
                "target_group_arn": self.target_group.arn,
                "access_log_bucket": logs.bucket.bucket,
            }
        )

    @property
    def request_count_label(self) -> pulumi.Output[str]:
        """The resource label ALBRequestCountPerTarget scaling needs: `<alb suffix>/<tg suffix>`."""
        return pulumi.Output.concat(self.alb.arn_suffix, "/", self.target_group.arn_suffix)
