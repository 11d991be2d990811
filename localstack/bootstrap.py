"""Create the email queue, its DLQ, the archive and the attachments buckets, idempotently."""

# Standalone on purpose: it runs from the launcher, from tests and as a LocalStack ready hook
# inside the LocalStack container, so it imports only the standard library, boto3 and
# (when present) localstack-client. Every setting comes from config/resources.json.

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

DEFAULT_ENDPOINT_URL = "http://localhost:4566"
DEFAULT_REGION = "us-east-1"
RESOURCES_ENV = "MAILSTACK_RESOURCES_FILE"
# Options of a ready hook, which gets no arguments.
PREFIX_ENV = "MAILSTACK_NAME_PREFIX"
SUFFIX_ENV = "MAILSTACK_NAME_SUFFIX"
# Where the LocalStack container gets config/resources.json mounted when run as a ready hook.
CONTAINER_RESOURCES_FILE = Path("/etc/mailstack/resources.json")
# Test credentials: LocalStack accepts any, and real AWS is never the target of this script.
LOCAL_ACCESS_KEY = "test"
LOCAL_SECRET_KEY = "test"  # noqa: S105

QueueAttributes = Mapping["QueueAttributeNameType", str]

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class ResourceNameError(ValueError):
    """A prefix or suffix makes a queue or bucket name that AWS would refuse."""


@dataclass(frozen=True)
class Resources:
    """What was created: the two queue URLs and the bucket names."""

    email_queue_url: str
    email_dlq_url: str
    archive_bucket: str
    attachments_bucket: str

    def as_env(self) -> dict[str, str]:
        return {
            "EMAIL_QUEUE_URL": self.email_queue_url,
            "EMAIL_DLQ_URL": self.email_dlq_url,
            "ARCHIVE_BUCKET": self.archive_bucket,
            "ATTACHMENTS_BUCKET": self.attachments_bucket,
        }


@dataclass(frozen=True)
class Names:
    """The actual names, with the prefix and suffix applied to those in resources.json."""

    email_queue: str
    dead_letter_queue: str
    archive_bucket: str
    attachments_bucket: str


def default_resources_file() -> Path:
    """`$MAILSTACK_RESOURCES_FILE`, else config/resources.json of the repo holding this script."""
    configured = os.environ.get(RESOURCES_ENV)
    if configured:
        return Path(configured)
    if "__file__" not in globals():
        return CONTAINER_RESOURCES_FILE
    return Path(__file__).resolve().parent.parent / "config" / "resources.json"


def load_settings(path: Path) -> dict[str, Any]:
    settings: dict[str, Any] = json.loads(path.read_text())
    return settings


def resource_names(settings: Mapping[str, Any], prefix: str = "", suffix: str = "") -> Names:
    names = Names(
        email_queue=f"{prefix}{settings['email_queue']['name']}{suffix}",
        dead_letter_queue=f"{prefix}{settings['dead_letter_queue']['name']}{suffix}",
        archive_bucket=f"{prefix}{settings['archive_bucket']['name']}{suffix}",
        attachments_bucket=f"{prefix}{settings['attachments_bucket']['name']}{suffix}",
    )
    for queue in (names.email_queue, names.dead_letter_queue):
        if not _QUEUE_NAME.match(queue):
            raise ResourceNameError(f"invalid SQS queue name: {queue!r}")
    for bucket in (names.archive_bucket, names.attachments_bucket):
        if not _BUCKET_NAME.match(bucket):
            raise ResourceNameError(f"invalid S3 bucket name: {bucket!r}")
    return names


def _localstack_session(endpoint_url: str, region: str) -> Any | None:
    """A localstack-client session aimed at `endpoint_url`, or None if it can't be used."""
    try:
        from localstack_client.session import Session
    except ImportError:
        return None
    parts = urlsplit(endpoint_url)
    session = Session(
        aws_access_key_id=LOCAL_ACCESS_KEY,
        aws_secret_access_key=LOCAL_SECRET_KEY,
        region_name=region,
        localstack_host=parts.netloc,
    )
    # localstack-client gives $AWS_ENDPOINT_URL and $USE_SSL precedence over localstack_host;
    # if they point elsewhere, honour the endpoint we were given rather than the environment.
    if session._service_endpoint_mapping.get("sqs") != endpoint_url.rstrip("/"):
        return None
    return session


def make_clients(endpoint_url: str, region: str) -> tuple[SQSClient, S3Client]:
    """SQS and S3 clients for the given endpoint, through localstack-client when available."""
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5})
    session = _localstack_session(endpoint_url, region)
    if session is not None:
        sqs: SQSClient = session.client("sqs", config=config)
        s3: S3Client = session.client("s3", config=config)
        return sqs, s3
    common: dict[str, Any] = {
        "endpoint_url": endpoint_url,
        "region_name": region,
        "aws_access_key_id": LOCAL_ACCESS_KEY,
        "aws_secret_access_key": LOCAL_SECRET_KEY,
        "config": config,
    }
    return boto3.client("sqs", **common), boto3.client("s3", **common)


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _existing_queue_url(sqs: SQSClient, name: str) -> str | None:
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if _error_code(error).endswith(("NonExistentQueue", "QueueDoesNotExist")):
            return None
        raise


def _apply_queue_attributes(sqs: SQSClient, url: str, attributes: QueueAttributes) -> None:
    try:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=dict(attributes))
    except ClientError as error:
        # Some SQS emulators do not know SSE-SQS; everything else must still apply.
        if "SqsManagedSseEnabled" not in attributes or "InvalidAttribute" not in _error_code(error):
            raise
        rest: dict[QueueAttributeNameType, str] = {
            k: v for k, v in attributes.items() if k != "SqsManagedSseEnabled"
        }
        sqs.set_queue_attributes(QueueUrl=url, Attributes=rest)


def ensure_queue(sqs: SQSClient, name: str, attributes: QueueAttributes) -> str:
    """The URL of queue `name`, created if missing; its attributes set to `attributes`."""
    url = _existing_queue_url(sqs, name)
    if url is None:
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
    _apply_queue_attributes(sqs, url, attributes)
    return url


def queue_arn(sqs: SQSClient, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]


def ensure_bucket(s3: S3Client, name: str, region: str) -> str:
    try:
        s3.head_bucket(Bucket=name)
        return name
    except ClientError as error:
        if _error_code(error) not in {"404", "NoSuchBucket", "NotFound"}:
            raise
    if region == "us-east-1":
        s3.create_bucket(Bucket=name)
    else:
        s3.create_bucket(
            Bucket=name,
            CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
        )
    return name


def expire_objects(s3: S3Client, bucket: str, days: int) -> None:
    """One lifecycle rule on `bucket`: every object is deleted `days` after it was written."""
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "expire",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "Expiration": {"Days": days},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                }
            ]
        },
    )


def bootstrap(
    sqs: SQSClient,
    s3: S3Client,
    settings: Mapping[str, Any],
    region: str = DEFAULT_REGION,
    prefix: str = "",
    suffix: str = "",
) -> Resources:
    """Create or update the DLQ, the email queue (redriving into it) and both buckets."""
    names = resource_names(settings, prefix, suffix)
    queue = settings["email_queue"]
    dlq = settings["dead_letter_queue"]

    dlq_url = ensure_queue(
        sqs,
        names.dead_letter_queue,
        {
            "MessageRetentionPeriod": str(dlq["message_retention_seconds"]),
            "SqsManagedSseEnabled": "true",
        },
    )
    redrive_policy = {
        "deadLetterTargetArn": queue_arn(sqs, dlq_url),
        "maxReceiveCount": int(queue["max_receive_count"]),
    }
    queue_url = ensure_queue(
        sqs,
        names.email_queue,
        {
            "VisibilityTimeout": str(queue["visibility_timeout_seconds"]),
            "ReceiveMessageWaitTimeSeconds": str(queue["receive_wait_time_seconds"]),
            "MessageRetentionPeriod": str(queue["message_retention_seconds"]),
            "RedrivePolicy": json.dumps(redrive_policy),
            "SqsManagedSseEnabled": "true",
        },
    )
    # Only the email queue may use the DLQ as its dead-letter target.
    redrive_allow = {"redrivePermission": "byQueue", "sourceQueueArns": [queue_arn(sqs, queue_url)]}
    _apply_queue_attributes(sqs, dlq_url, {"RedriveAllowPolicy": json.dumps(redrive_allow)})

    archive = ensure_bucket(s3, names.archive_bucket, region)
    attachments = ensure_bucket(s3, names.attachments_bucket, region)
    expire_objects(s3, attachments, int(settings["attachments_bucket"]["expire_after_days"]))
    return Resources(
        email_queue_url=queue_url,
        email_dlq_url=dlq_url,
        archive_bucket=archive,
        attachments_bucket=attachments,
    )


def run(
    endpoint_url: str,
    region: str = DEFAULT_REGION,
    prefix: str = "",
    suffix: str = "",
    resources_file: Path | None = None,
) -> Resources:
    """Read resources.json, connect to `endpoint_url` and bootstrap; the in-process entry point."""
    settings = load_settings(resources_file or default_resources_file())
    sqs, s3 = make_clients(endpoint_url, region)
    return bootstrap(sqs, s3, settings, region=region, prefix=prefix, suffix=suffix)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL") or DEFAULT_ENDPOINT_URL,
        help="LocalStack endpoint (default: $AWS_ENDPOINT_URL or %(default)s)",
    )
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument(
        "--name-prefix",
        default=os.environ.get(PREFIX_ENV, ""),
        help=f"prepended to every name (default: ${PREFIX_ENV} or none)",
    )
    parser.add_argument(
        "--suffix",
        default=os.environ.get(SUFFIX_ENV, ""),
        help=f"appended to every name (default: ${SUFFIX_ENV} or none)",
    )
    parser.add_argument(
        "--resources-file",
        type=Path,
        default=None,
        help=f"settings file (default: ${RESOURCES_ENV} or config/resources.json)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    resources = run(
        endpoint_url=args.endpoint_url,
        region=args.region,
        prefix=args.name_prefix,
        suffix=args.suffix,
        resources_file=args.resources_file,
    )
    sys.stdout.write(json.dumps(resources.as_env()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
elif "__file__" not in globals():
    # Run by LocalStack as a ready hook: it exec()s the file's source with empty globals.
    main([])
