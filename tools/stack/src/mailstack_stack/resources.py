"""The queues and bucket of a stack: created by localstack/bootstrap.py, removed after tests."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import ClientError

from mailstack_stack.config import AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, REGION, find_repo_root

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sqs.client import SQSClient

_MODULE_NAME = "mailstack_localstack_bootstrap"


@dataclass(frozen=True)
class QueueResources:
    """The email queue, its dead-letter queue and the two buckets of one stack."""

    email_queue_url: str
    email_dlq_url: str
    archive_bucket: str
    attachments_bucket: str


def load_bootstrap(script: Path) -> ModuleType:
    """Import localstack/bootstrap.py from its path (it is a script, not a package module)."""
    loaded = sys.modules.get(_MODULE_NAME)
    if loaded is not None and getattr(loaded, "__file__", None) == str(script):
        return loaded
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, script)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {script}")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: dataclasses look their module up in sys.modules.
    sys.modules[_MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


def bootstrap(
    repo_root: Path, endpoint_url: str, prefix: str = "", suffix: str = ""
) -> QueueResources:
    """Run the bootstrap in-process against `endpoint_url`, with names from resources.json."""
    module = load_bootstrap(repo_root / "localstack" / "bootstrap.py")
    created = module.run(
        endpoint_url=endpoint_url,
        region=REGION,
        prefix=prefix,
        suffix=suffix,
        resources_file=repo_root / "config" / "resources.json",
    )
    names = ("email_queue_url", "email_dlq_url", "archive_bucket", "attachments_bucket")
    return QueueResources(*(str(getattr(created, name)) for name in names))


def localstack_clients(endpoint_url: str, region: str = REGION) -> tuple[SQSClient, S3Client]:
    """SQS and S3 clients aimed at LocalStack, built with localstack-client as the bootstrap
    builds them (tests use these; the services use plain boto3 and AWS_ENDPOINT_URL)."""
    module = load_bootstrap(find_repo_root() / "localstack" / "bootstrap.py")
    sqs: SQSClient
    s3: S3Client
    sqs, s3 = module.make_clients(endpoint_url, region)
    return sqs, s3


def delete_resources(resources: QueueResources, endpoint_url: str) -> None:
    """Delete exactly these two queues and these buckets (emptied first); missing ones are fine."""
    session = boto3.Session(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, region_name=REGION)
    sqs = session.client("sqs", endpoint_url=endpoint_url)
    for url in (resources.email_queue_url, resources.email_dlq_url):
        try:
            sqs.delete_queue(QueueUrl=url)
        except ClientError as error:
            if not str(error.response["Error"]["Code"]).endswith(
                ("NonExistentQueue", "QueueDoesNotExist")
            ):
                raise
    s3 = session.resource("s3", endpoint_url=endpoint_url)
    for bucket in map(s3.Bucket, (resources.archive_bucket, resources.attachments_bucket)):
        try:
            # Versions and delete markers too, in case the bucket got versioning.
            bucket.object_versions.delete()
            bucket.delete()
        except ClientError as error:
            if error.response["Error"]["Code"] != "NoSuchBucket":
                raise
