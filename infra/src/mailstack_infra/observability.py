"""The alarm topic every alarm notifies, and the alarm shape they share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class AlarmTopicArgs:
    """What the alarm topic needs to know."""

    prefix: str
    email: str | None


class AlarmTopic(pulumi.ComponentResource):
    """An encrypted SNS topic for alarms, optionally mailed to the on-call address."""

    topic: aws.sns.Topic

    def __init__(
        self, name: str, args: AlarmTopicArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:observability:AlarmTopic", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.topic = aws.sns.Topic(
            f"{name}-topic",
            name=f"{args.prefix}-alarms",
            kms_master_key_id="alias/aws/sns",
            opts=child,
        )
        if args.email:
            aws.sns.TopicSubscription(
                f"{name}-email",
                topic=self.topic.arn,
                protocol="email",
                endpoint=args.email,
                opts=child,
            )
        self.register_outputs({"alarm_topic_arn": self.topic.arn})


@dataclass(frozen=True)
class Threshold:
    """When a metric is in alarm: statistic over a period, compared to a threshold."""

    threshold: float
    statistic: str = "Average"
    comparison: str = "GreaterThanThreshold"
    period: int = 300
    evaluation_periods: int = 3


def alarm(
    name: str,
    *,
    description: str,
    namespace: str,
    metric: str,
    dimensions: Mapping[str, pulumi.Input[str]],
    when: Threshold,
    topic_arn: pulumi.Input[str],
    parent: pulumi.Resource,
) -> aws.cloudwatch.MetricAlarm:
    """Declare a CloudWatch alarm that notifies the alarm topic on alarm and on recovery."""
    return aws.cloudwatch.MetricAlarm(
        name,
        alarm_description=description,
        namespace=namespace,
        metric_name=metric,
        dimensions=dict(dimensions),
        statistic=when.statistic,
        period=when.period,
        evaluation_periods=when.evaluation_periods,
        threshold=when.threshold,
        comparison_operator=when.comparison,
        treat_missing_data="notBreaching",
        alarm_actions=[topic_arn],
        ok_actions=[topic_arn],
        opts=pulumi.ResourceOptions(parent=parent),
    )
