"""AWS clients for tests aimed at LocalStack, and removal of a test's queues and buckets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import ClientError

from mailstack_stack.config import AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, REGION, find_repo_root
from mailstack_stack.resources import QueueResources, load_bootstrap

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sqs.client import SQSClient


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
