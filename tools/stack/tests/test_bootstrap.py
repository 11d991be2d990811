"""localstack/bootstrap.py against a real LocalStack: settings from resources.json, idempotent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from mailstack_stack.resources import QueueResources, bootstrap, load_bootstrap
from mailstack_testing.aws import delete_resources

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration


def _sqs(endpoint: str) -> SQSClient:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def _s3(endpoint: str) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def _attributes(endpoint: str, url: str) -> dict[str, str]:
    response = _sqs(endpoint).get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    return {str(name): value for name, value in response["Attributes"].items()}


@pytest.fixture(scope="module")
def settings(repo_root: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((repo_root / "config" / "resources.json").read_text())
    return loaded


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}-"


@pytest.fixture
def created(repo_root: Path, localstack_endpoint: str, prefix: str) -> Iterator[QueueResources]:
    resources = bootstrap(repo_root, localstack_endpoint, prefix=prefix)
    yield resources
    delete_resources(resources, localstack_endpoint)


def test_email_queue_redrives_into_the_dlq_with_the_configured_settings(
    created: QueueResources, localstack_endpoint: str, settings: dict[str, Any]
) -> None:
    queue = _attributes(localstack_endpoint, created.email_queue_url)
    dlq = _attributes(localstack_endpoint, created.email_dlq_url)
    expected = settings["email_queue"]

    assert json.loads(queue["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq["QueueArn"],
        "maxReceiveCount": expected["max_receive_count"],
    }
    assert queue["VisibilityTimeout"] == str(expected["visibility_timeout_seconds"])
    assert queue["ReceiveMessageWaitTimeSeconds"] == str(expected["receive_wait_time_seconds"])
    assert queue["MessageRetentionPeriod"] == str(expected["message_retention_seconds"])
    assert queue["SqsManagedSseEnabled"] == "true"


def test_dlq_keeps_messages_longer_and_accepts_only_the_email_queue(
    created: QueueResources, localstack_endpoint: str, settings: dict[str, Any]
) -> None:
    queue = _attributes(localstack_endpoint, created.email_queue_url)
    dlq = _attributes(localstack_endpoint, created.email_dlq_url)

    retention = settings["dead_letter_queue"]["message_retention_seconds"]
    assert dlq["MessageRetentionPeriod"] == str(retention)
    assert int(dlq["MessageRetentionPeriod"]) > int(queue["MessageRetentionPeriod"])
    assert json.loads(dlq["RedriveAllowPolicy"]) == {
        "redrivePermission": "byQueue",
        "sourceQueueArns": [queue["QueueArn"]],
    }


def test_names_are_the_configured_ones_with_prefix_and_suffix(
    repo_root: Path, localstack_endpoint: str, settings: dict[str, Any]
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    resources = bootstrap(repo_root, localstack_endpoint, prefix=prefix, suffix="-x")
    try:
        assert resources.email_queue_url.endswith(f"/{prefix}{settings['email_queue']['name']}-x")
        assert resources.email_dlq_url.endswith(
            f"/{prefix}{settings['dead_letter_queue']['name']}-x"
        )
        assert resources.archive_bucket == f"{prefix}{settings['archive_bucket']['name']}-x"
        assert resources.attachments_bucket == (
            f"{prefix}{settings['attachments_bucket']['name']}-x"
        )
        for bucket in (resources.archive_bucket, resources.attachments_bucket):
            _s3(localstack_endpoint).head_bucket(Bucket=bucket)
    finally:
        delete_resources(resources, localstack_endpoint)


def test_attachments_expire_after_the_configured_days(
    created: QueueResources, localstack_endpoint: str, settings: dict[str, Any]
) -> None:
    lifecycle = _s3(localstack_endpoint).get_bucket_lifecycle_configuration(
        Bucket=created.attachments_bucket
    )
    (rule,) = lifecycle["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["Expiration"]["Days"] == settings["attachments_bucket"]["expire_after_days"]


def test_running_again_changes_nothing_and_restores_drifted_attributes(
    created: QueueResources, repo_root: Path, localstack_endpoint: str, prefix: str
) -> None:
    before = _attributes(localstack_endpoint, created.email_queue_url)
    _sqs(localstack_endpoint).set_queue_attributes(
        QueueUrl=created.email_queue_url, Attributes={"VisibilityTimeout": "1"}
    )

    again = bootstrap(repo_root, localstack_endpoint, prefix=prefix)

    assert again == created
    after = _attributes(localstack_endpoint, created.email_queue_url)
    for name in ("VisibilityTimeout", "RedrivePolicy", "MessageRetentionPeriod", "QueueArn"):
        assert after[name] == before[name], name


def test_refuses_a_prefix_that_makes_an_invalid_bucket_name(
    repo_root: Path, localstack_endpoint: str
) -> None:
    module = load_bootstrap(repo_root / "localstack" / "bootstrap.py")
    with pytest.raises(module.ResourceNameError, match="bucket"):
        bootstrap(repo_root, localstack_endpoint, prefix="UPPER-")


def test_script_prints_the_urls_as_json(
    repo_root: Path, localstack_endpoint: str, prefix: str
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(repo_root / "localstack" / "bootstrap.py"),
            "--endpoint-url",
            localstack_endpoint,
            "--name-prefix",
            prefix,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    printed = json.loads(result.stdout)
    resources = QueueResources(
        printed["EMAIL_QUEUE_URL"],
        printed["EMAIL_DLQ_URL"],
        printed["ARCHIVE_BUCKET"],
        printed["ATTACHMENTS_BUCKET"],
    )
    try:
        assert set(printed) == {
            "EMAIL_QUEUE_URL",
            "EMAIL_DLQ_URL",
            "ARCHIVE_BUCKET",
            "ATTACHMENTS_BUCKET",
        }
        assert resources.email_queue_url.startswith(localstack_endpoint)
        assert _attributes(localstack_endpoint, resources.email_queue_url)["RedrivePolicy"]
    finally:
        delete_resources(resources, localstack_endpoint)


def test_runs_as_a_localstack_ready_hook_with_only_boto3(
    repo_root: Path, localstack_endpoint: str, prefix: str
) -> None:
    # LocalStack exec()s ready hooks with empty globals, no arguments, in its own venv.
    hook = (
        "import builtins, sys\n"
        "sys.modules['localstack_client'] = None\n"  # as in the container: not installed
        f"exec(open({str(repo_root / 'localstack' / 'bootstrap.py')!r}).read(), {{}})\n"
    )
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": localstack_endpoint,
        "MAILSTACK_RESOURCES_FILE": str(repo_root / "config" / "resources.json"),
        "MAILSTACK_NAME_PREFIX": prefix,
    }
    result = subprocess.run(
        [sys.executable, "-c", hook], capture_output=True, text=True, env=env, check=True
    )
    printed = json.loads(result.stdout)
    resources = QueueResources(
        printed["EMAIL_QUEUE_URL"],
        printed["EMAIL_DLQ_URL"],
        printed["ARCHIVE_BUCKET"],
        printed["ATTACHMENTS_BUCKET"],
    )
    try:
        assert f"/{prefix}" in resources.email_queue_url
        assert _attributes(localstack_endpoint, resources.email_queue_url)["RedrivePolicy"]
    finally:
        delete_resources(resources, localstack_endpoint)


def test_uses_localstack_client_aimed_at_the_given_endpoint(
    repo_root: Path, localstack_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_bootstrap(repo_root / "localstack" / "bootstrap.py")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    sqs, s3 = module.make_clients(localstack_endpoint, "us-east-1")
    assert module._localstack_session(localstack_endpoint, "us-east-1") is not None
    assert sqs.meta.endpoint_url == localstack_endpoint
    assert s3.meta.endpoint_url == localstack_endpoint


def test_an_aws_endpoint_url_elsewhere_does_not_redirect_the_clients(
    repo_root: Path, localstack_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_bootstrap(repo_root / "localstack" / "bootstrap.py")
    # localstack-client would prefer this variable over the endpoint it is given.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    sqs, _ = module.make_clients(localstack_endpoint, "us-east-1")
    assert sqs.meta.endpoint_url == localstack_endpoint


def test_teardown_removes_its_queues_and_filled_bucket_and_nothing_else(
    repo_root: Path, localstack_endpoint: str, created: QueueResources
) -> None:
    mine = bootstrap(repo_root, localstack_endpoint, prefix=f"t{uuid.uuid4().hex[:10]}-")
    s3 = _s3(localstack_endpoint)
    s3.put_bucket_versioning(
        Bucket=mine.archive_bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    s3.put_object(Bucket=mine.archive_bucket, Key="a/b.json", Body=b"{}")
    s3.put_object(Bucket=mine.archive_bucket, Key="a/b.json", Body=b"{}")
    s3.put_object(Bucket=mine.attachments_bucket, Key="e/0", Body=b"%PDF")

    delete_resources(mine, localstack_endpoint)

    queues = _sqs(localstack_endpoint).list_queues().get("QueueUrls", [])
    assert mine.email_queue_url not in queues
    assert mine.email_dlq_url not in queues
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert mine.archive_bucket not in buckets
    assert mine.attachments_bucket not in buckets
    # Someone else's resources on the same LocalStack are untouched.
    assert {created.email_queue_url, created.email_dlq_url} <= set(queues)
    assert {created.archive_bucket, created.attachments_bucket} <= buckets
    delete_resources(mine, localstack_endpoint)  # already gone: fine
