"""Attachment bytes from S3, read with plain boto3 off the event loop, just before a send."""

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from mailstack_processor.delivery import AttachmentMissingError, AttachmentStoreUnavailableError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

# What S3 answers for a key that is not there (GetObject says NoSuchKey; some paths say 404).
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


def s3_client(endpoint_url: str | None, region: str, max_connections: int) -> "S3Client":
    config = Config(
        connect_timeout=2,
        read_timeout=10,
        retries={"max_attempts": 3, "mode": "standard"},
        # LocalStack (an endpoint URL) serves buckets by path, not by host name.
        s3={"addressing_style": "path"} if endpoint_url else {},
        max_pool_connections=max_connections,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


class S3AttachmentSource:
    """`client` makes the S3 client when first called (an `OnFirstUse`: the client costs about
    6 MB of resident memory, and many emails carry no attachment)."""

    def __init__(self, client: Callable[[], "S3Client"], bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    async def fetch(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self._get, key)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _MISSING_CODES:
                raise AttachmentMissingError(
                    f"{key} is not in {self._bucket} (expired, or never stored)"
                ) from error
            raise AttachmentStoreUnavailableError(f"S3 get {key}: {error}") from error
        except BotoCoreError as error:
            raise AttachmentStoreUnavailableError(f"S3 get {key}: {error}") from error

    def _get(self, key: str) -> bytes:
        return self._client().get_object(Bucket=self._bucket, Key=key)["Body"].read()
