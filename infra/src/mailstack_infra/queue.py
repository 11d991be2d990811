"""The email queue, its dead-letter queue, the redrive wiring and their alarms."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from mailstack_infra.observability import Threshold, alarm
from mailstack_infra.settings import QueueSettings

OLDEST_MESSAGE_ALARM_SECONDS = 600


@dataclass(frozen=True)
class EmailQueueArgs:
    """What the queue needs to know; the settings come from config/resources.json."""

    stack: str
    settings: QueueSettings
    alarm_topic_arn: pulumi.Input[str]


class EmailQueue(pulumi.ComponentResource):
    """SQS queue + DLQ, both encrypted; the DLQ accepts redrives from this queue only."""

    queue: aws.sqs.Queue
    dead_letter_queue: aws.sqs.Queue

    def __init__(
        self, name: str, args: EmailQueueArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mailstack:queue:EmailQueue", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        settings = args.settings
        if settings.dlq_message_retention_seconds <= settings.message_retention_seconds:
            raise ValueError("the DLQ must keep messages longer than the queue it serves")

        self.dead_letter_queue = aws.sqs.Queue(
            f"{name}-dlq",
            name=f"{settings.dlq_name}-{args.stack}",
            message_retention_seconds=settings.dlq_message_retention_seconds,
            sqs_managed_sse_enabled=True,
            opts=child,
        )
        self.queue = aws.sqs.Queue(
            f"{name}-queue",
            name=f"{settings.name}-{args.stack}",
            visibility_timeout_seconds=settings.visibility_timeout_seconds,
            receive_wait_time_seconds=settings.receive_wait_time_seconds,
            message_retention_seconds=settings.message_retention_seconds,
            sqs_managed_sse_enabled=True,
            redrive_policy=self.dead_letter_queue.arn.apply(
                lambda arn: json.dumps(
                    {"deadLetterTargetArn": arn, "maxReceiveCount": settings.max_receive_count}
                )
            ),
            opts=child,
        )
        aws.sqs.RedriveAllowPolicy(
            f"{name}-dlq-redrive-allow",
            queue_url=self.dead_letter_queue.url,
            redrive_allow_policy=self.queue.arn.apply(
                lambda arn: json.dumps({"redrivePermission": "byQueue", "sourceQueueArns": [arn]})
            ),
            opts=child,
        )

        alarm(
            f"{name}-dlq-depth",
            description="Emails reached the dead-letter queue: inspect and redrive them",
            namespace="AWS/SQS",
            metric="ApproximateNumberOfMessagesVisible",
            dimensions={"QueueName": self.dead_letter_queue.name},
            when=Threshold(0, statistic="Maximum", period=60, evaluation_periods=1),
            topic_arn=args.alarm_topic_arn,
            parent=self,
        )
        alarm(
            f"{name}-oldest-message",
            description="Emails wait too long in the queue: the processor is behind or down",
            namespace="AWS/SQS",
            metric="ApproximateAgeOfOldestMessage",
            dimensions={"QueueName": self.queue.name},
            when=Threshold(
                OLDEST_MESSAGE_ALARM_SECONDS, statistic="Maximum", period=60, evaluation_periods=5
            ),
            topic_arn=args.alarm_topic_arn,
            parent=self,
        )

        self.register_outputs(
            {
                "queue_url": self.queue.url,
                "queue_arn": self.queue.arn,
                "dead_letter_queue_url": self.dead_letter_queue.url,
            }
        )
