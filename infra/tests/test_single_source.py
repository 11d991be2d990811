"""config/resources.json is the one source of queue, DLQ and bucket settings for both stacks."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mailstack_infra.mocks import StackRecord

REPO_ROOT = Path(__file__).resolve().parents[2]
RESOURCES = json.loads((REPO_ROOT / "config" / "resources.json").read_text())


def program_queues(stack: StackRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    queue = dict(stack.one("aws:sqs/queue:Queue", "email-queue-queue").inputs)
    dlq = dict(stack.one("aws:sqs/queue:Queue", "email-queue-dlq").inputs)
    return queue, dlq


@pytest.mark.parametrize("fixture", ["dev", "prod", "localstack"])
def test_program_queue_settings_equal_resources_json(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    queue, dlq = program_queues(request.getfixturevalue(fixture))
    source = RESOURCES["email_queue"]
    assert queue["visibilityTimeoutSeconds"] == source["visibility_timeout_seconds"]
    assert queue["receiveWaitTimeSeconds"] == source["receive_wait_time_seconds"]
    assert queue["messageRetentionSeconds"] == source["message_retention_seconds"]
    assert json.loads(queue["redrivePolicy"])["maxReceiveCount"] == source["max_receive_count"]
    assert (
        dlq["messageRetentionSeconds"]
        == RESOURCES["dead_letter_queue"]["message_retention_seconds"]
    )


def test_program_names_derive_from_resources_json(prod: StackRecord) -> None:
    queue, dlq = program_queues(prod)
    assert queue["name"] == f"{RESOURCES['email_queue']['name']}-prod"
    assert dlq["name"] == f"{RESOURCES['dead_letter_queue']['name']}-prod"
    for name in ("archive", "attachments"):
        bucket = prod.one("aws:s3/bucket:Bucket", name).inputs["bucket"]
        assert bucket.startswith(f"{RESOURCES[f'{name}_bucket']['name']}-prod-"), name


def _load_bootstrap() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "mailstack_local_bootstrap", REPO_ROOT / "localstack" / "bootstrap.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the module executes.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class RecordingSqs:
    """Just enough of an SQS client for the bootstrap, remembering the attributes it sets."""

    def __init__(self) -> None:
        self.attributes: dict[str, dict[str, str]] = {}

    def get_queue_url(self, QueueName: str) -> dict[str, str]:  # noqa: N803  # boto3's names
        raise ClientError({"Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue"}}, "x")

    def create_queue(self, QueueName: str) -> dict[str, str]:  # noqa: N803
        self.attributes[QueueName] = {}
        return {"QueueUrl": f"http://localhost/{QueueName}"}

    def set_queue_attributes(self, QueueUrl: str, Attributes: dict[str, str]) -> None:  # noqa: N803
        self.attributes[QueueUrl.rsplit("/", 1)[1]].update(Attributes)

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:  # noqa: N803
        return {
            "Attributes": {
                "QueueArn": f"arn:aws:sqs:us-east-1:000000000000:{QueueUrl.rsplit('/', 1)[1]}"
            }
        }


class RecordingS3:
    def __init__(self) -> None:
        self.lifecycles: dict[str, dict[str, Any]] = {}

    def head_bucket(self, Bucket: str) -> None:  # noqa: N803
        raise ClientError({"Error": {"Code": "404"}}, "HeadBucket")

    def create_bucket(self, Bucket: str, **_: Any) -> None:  # noqa: N803
        return None

    def put_bucket_lifecycle_configuration(
        self,
        Bucket: str,  # noqa: N803
        LifecycleConfiguration: dict[str, Any],  # noqa: N803
    ) -> None:
        self.lifecycles[Bucket] = LifecycleConfiguration


def test_local_bootstrap_and_program_declare_the_same_queue_attributes(dev: StackRecord) -> None:
    bootstrap = _load_bootstrap()
    sqs = RecordingSqs()
    bootstrap.bootstrap(sqs, RecordingS3(), RESOURCES)
    local_queue = sqs.attributes[RESOURCES["email_queue"]["name"]]
    local_dlq = sqs.attributes[RESOURCES["dead_letter_queue"]["name"]]
    queue, dlq = program_queues(dev)

    assert int(local_queue["VisibilityTimeout"]) == queue["visibilityTimeoutSeconds"]
    assert int(local_queue["ReceiveMessageWaitTimeSeconds"]) == queue["receiveWaitTimeSeconds"]
    assert int(local_queue["MessageRetentionPeriod"]) == queue["messageRetentionSeconds"]
    assert (
        json.loads(local_queue["RedrivePolicy"])["maxReceiveCount"]
        == json.loads(queue["redrivePolicy"])["maxReceiveCount"]
    )
    assert int(local_dlq["MessageRetentionPeriod"]) == dlq["messageRetentionSeconds"]
    assert local_queue["SqsManagedSseEnabled"] == "true"
    assert queue["sqsManagedSseEnabled"] is True
    assert json.loads(local_dlq["RedriveAllowPolicy"])["redrivePermission"] == "byQueue"


def test_local_bootstrap_and_program_expire_attachments_after_the_same_days(
    dev: StackRecord,
) -> None:
    bootstrap = _load_bootstrap()
    s3 = RecordingS3()
    bootstrap.bootstrap(RecordingSqs(), s3, RESOURCES)
    (local_rule,) = s3.lifecycles[RESOURCES["attachments_bucket"]["name"]]["Rules"]
    bucket = dev.one("aws:s3/bucket:Bucket", "attachments").outputs["bucket"]
    (program,) = [
        r.inputs
        for r in dev.of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
        if r.inputs["bucket"] == bucket
    ]
    assert local_rule["Expiration"]["Days"] == program["rules"][0]["expiration"]["days"]
    assert local_rule["Expiration"]["Days"] == RESOURCES["attachments_bucket"]["expire_after_days"]
