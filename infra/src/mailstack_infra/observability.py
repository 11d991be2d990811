"""The alarm topic every alarm notifies, and the alarm shape they share."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from mailstack_infra.iam import Statement

# The services that publish to the alarm topic on their own behalf: CloudWatch alarms, and
# EventBridge rules (failed ECS deployments). Each needs the topic's key as well as the topic.
PUBLISHERS = ("cloudwatch.amazonaws.com", "events.amazonaws.com")
# What a publisher needs of the key to publish to an encrypted topic.
PUBLISH_KEY_ACTIONS = ["kms:Decrypt", "kms:GenerateDataKey*"]


@dataclass(frozen=True)
class AlarmTopicArgs:
    """What the alarm topic needs to know."""

    prefix: str
    email: str | None
    account_id: pulumi.Input[str]
    partition: pulumi.Input[str]


def key_policy(account_id: str, partition: str) -> dict[str, Any]:
    """The alarm key's policy: the account administers it (through IAM), and CloudWatch and
    EventBridge may use it to publish.

    The AWS-managed `alias/aws/sns` key cannot be used here: its policy, which nobody can edit,
    does not let CloudWatch use it, so alarms would change state and notify no one.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AccountAdministersThroughIam",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "AlarmPublishersEncrypt",
                "Effect": "Allow",
                "Principal": {"Service": list(PUBLISHERS)},
                "Action": PUBLISH_KEY_ACTIONS,
                # No condition: AWS documents this statement bare, and a condition key the
                # service does not send would silence every alarm again. The topic's own
                # policy holds publishers to this account.
                "Resource": "*",
            },
        ],
    }


def topic_policy(topic_arn: str, account_id: str) -> dict[str, Any]:
    """Who may publish to the alarm topic: this account's CloudWatch alarms and EventBridge
    rules (roles of the account, the jobs' failure destination, publish through IAM)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AlarmPublishers",
                "Effect": "Allow",
                "Principal": {"Service": list(PUBLISHERS)},
                "Action": "sns:Publish",
                "Resource": topic_arn,
                "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
            }
        ],
    }


class AlarmTopic(pulumi.ComponentResource):
    """An SNS topic for alarms, encrypted with its own key, optionally mailed to on-call."""

    topic: aws.sns.Topic
    key: aws.kms.Key

    def __init__(
        self, name: str, args: AlarmTopicArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:observability:AlarmTopic", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.key = aws.kms.Key(
            f"{name}-key",
            description=f"{args.prefix} alarm topic: CloudWatch and EventBridge publish with it",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=pulumi.Output.all(args.account_id, args.partition).apply(
                lambda values: json.dumps(key_policy(values[0], values[1]))
            ),
            opts=child,
        )
        aws.kms.Alias(
            f"{name}-key",
            name=f"alias/{args.prefix}-alarms",
            target_key_id=self.key.key_id,
            opts=child,
        )
        self.topic = aws.sns.Topic(
            f"{name}-topic",
            name=f"{args.prefix}-alarms",
            kms_master_key_id=self.key.arn,
            opts=child,
        )
        aws.sns.TopicPolicy(
            f"{name}-topic",
            arn=self.topic.arn,
            policy=pulumi.Output.all(self.topic.arn, args.account_id).apply(
                lambda values: json.dumps(topic_policy(values[0], values[1]))
            ),
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

    @property
    def publish_statements(self) -> list[Statement]:
        """What a role needs to publish to the topic (the jobs' on-failure destination)."""
        return [
            Statement(actions=["sns:Publish"], resources=[self.topic.arn]),
            Statement(actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[self.key.arn]),
        ]


@dataclass(frozen=True)
class Threshold:
    """When a metric is in alarm: statistic over a period, compared to a threshold."""

    threshold: float
    # A CloudWatch statistic (Average, Sum, ...) or a percentile (p99).
    statistic: str = "Average"
    comparison: str = "GreaterThanThreshold"
    period: int = 300
    evaluation_periods: int = 3
    # Missing data is healthy for most metrics (no errors reported); not for a running count.
    missing_data: str = "notBreaching"

    @property
    def percentile(self) -> bool:
        return self.statistic.startswith("p")


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
        statistic=None if when.percentile else when.statistic,
        extended_statistic=when.statistic if when.percentile else None,
        period=when.period,
        evaluation_periods=when.evaluation_periods,
        threshold=when.threshold,
        comparison_operator=when.comparison,
        treat_missing_data=when.missing_data,
        alarm_actions=[topic_arn],
        ok_actions=[topic_arn],
        opts=pulumi.ResourceOptions(parent=parent),
    )
