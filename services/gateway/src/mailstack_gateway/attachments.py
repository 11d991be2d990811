"""Attachment bytes in S3, put with plain boto3 off the event loop before the email commits."""

import asyncio
import base64
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from mailstack_gateway.intake import AttachmentStorageUnavailableError
from mailstack_gateway.schemas import AttachmentCreate

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client


def s3_client(endpoint_url: str | None, region: str) -> "S3Client":
    """Bounded timeouts: a request holding up to 10 MiB of attachments must not wait long on a
    slow S3; it fails with 503 and the client retries."""
    config = Config(
        connect_timeout=2,
        read_timeout=10,
        retries={"max_attempts": 3, "mode": "standard"},
        # LocalStack (an endpoint URL) serves buckets by path, not by host name.
        s3={"addressing_style": "path"} if endpoint_url else {},
        max_pool_connections=32,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def attachment_key(email_id: uuid.UUID, index: int) -> str:
    """Keyed by email id: an email's files sit together, in request order."""
    return f"{email_id}/{index}"


class S3AttachmentStore:
    """`client` makes the S3 client when first called (an `OnFirstUse`: the client costs about
    6 MB of resident memory, and most gateways see few attachments)."""

    def __init__(self, client: Callable[[], "S3Client"], bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    async def put(self, email_id: uuid.UUID, attachments: Sequence[AttachmentCreate]) -> list[str]:
        keys = [attachment_key(email_id, index) for index in range(len(attachments))]
        try:
            await asyncio.gather(
                *(
                    asyncio.to_thread(self._put, key, attachment)
                    for key, attachment in zip(keys, attachments, strict=True)
                )
            )
        except (BotoCoreError, ClientError) as error:
            raise AttachmentStorageUnavailableError(f"S3 put failed: {error}") from error
        return keys

    def _put(self, key: str, attachment: AttachmentCreate) -> None:
        # S3 checks the bytes against the checksum, so what it keeps is what the client sent.
        self._client().put_object(
            Bucket=self._bucket,
            Key=key,
            Body=attachment.content,
            ContentType=attachment.content_type,
            ChecksumSHA256=base64.b64encode(bytes.fromhex(attachment.sha256)).decode(),
        )
