"""The public ALB in front of the gateway: target group, listeners, access logs and alarms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mailstack_infra.buckets import PrivateBucket, PrivateBucketArgs, expire_after
from mailstack_infra.firewall import GATEWAY_PORT
from mailstack_infra.observability import Threshold, alarm

TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
HEALTH_CHECK_PATH = "/healthz"
ACCESS_LOG_PREFIX = "alb"
ACCESS_LOG_DAYS = 90


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
    elb_account_arn: pulumi.Input[str]
    alarm_topic_arn: pulumi.Input[str]


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
                    pulumi.Output.all(log_bucket_name, args.account_id, args.elb_account_arn).apply(
                        lambda values: {
                            "Sid": "AllowAlbAccessLogs",
                            "Effect": "Allow",
                            "Principal": {"AWS": values[2]},
                            "Action": "s3:PutObject",
                            "Resource": (
                                f"arn:aws:s3:::{values[0]}/{ACCESS_LOG_PREFIX}/AWSLogs/{values[1]}/*"
                            ),
                        }
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
            idle_timeout=60,
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
            description="Gateway tasks fail the /healthz check",
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
