"""Lambda handler run by `pulumi up`: start the migration task, wait for it, fail if it failed.

Packaged alone (it imports nothing of the repository; boto3 comes with the Lambda runtime).
An error here fails the `aws.lambda_.Invocation`, so `pulumi up` stops before any service
starts tasks of the new image.
"""

from __future__ import annotations

from typing import Any, Protocol

# The Lambda may run 15 minutes; the wait ends a minute earlier with a clear error instead.
WAIT_SECONDS = 840
POLL_SECONDS = 6
CONTAINER = "migrate"


class MigrationFailedError(RuntimeError):
    """The migration task did not start, or stopped with a non-zero exit code."""


class Waiter(Protocol):
    def wait(self, **kwargs: Any) -> None: ...


class EcsClient(Protocol):
    """The calls of boto3's ECS client this handler makes."""

    def run_task(self, **kwargs: Any) -> dict[str, Any]: ...

    def describe_tasks(self, **kwargs: Any) -> dict[str, Any]: ...

    def get_waiter(self, name: str) -> Waiter: ...


def run_migration(
    ecs: EcsClient, event: dict[str, Any], poll_seconds: float = POLL_SECONDS
) -> dict[str, Any]:
    """Run the task `event` names on Fargate in its subnets and group, and wait for its end."""
    started = ecs.run_task(
        cluster=event["cluster"],
        taskDefinition=event["taskDefinition"],
        launchType="FARGATE",
        count=1,
        startedBy="pulumi-migrate",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": event["subnets"],
                "securityGroups": event["securityGroups"],
                "assignPublicIp": "DISABLED",
            }
        },
    )
    if started.get("failures") or not started.get("tasks"):
        raise MigrationFailedError(f"the migration task did not start: {started.get('failures')}")
    task_arn = started["tasks"][0]["taskArn"]
    ecs.get_waiter("tasks_stopped").wait(
        cluster=event["cluster"],
        tasks=[task_arn],
        WaiterConfig={"Delay": poll_seconds, "MaxAttempts": int(WAIT_SECONDS // POLL_SECONDS)},
    )
    (task,) = ecs.describe_tasks(cluster=event["cluster"], tasks=[task_arn])["tasks"]
    container = next(c for c in task["containers"] if c["name"] == CONTAINER)
    exit_code = container.get("exitCode")
    if exit_code != 0:
        reason = container.get("reason") or task.get("stoppedReason") or "no reason given"
        raise MigrationFailedError(
            f"migration task {task_arn} stopped with exit code {exit_code}: {reason} "
            f"(its log: the {CONTAINER} stream of the task's log group)"
        )
    return {"taskArn": task_arn, "exitCode": exit_code}


def handler(event: dict[str, Any], _context: object) -> dict[str, Any]:
    import boto3  # the Lambda runtime's; imported only where it runs

    ecs: EcsClient = boto3.client("ecs")
    return run_migration(ecs, event)
