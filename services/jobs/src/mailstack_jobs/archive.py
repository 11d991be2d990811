"""The archive of expired emails in S3: gzip-compressed JSON Lines, one object per batch and day."""

import base64
import gzip
import hashlib
import json
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from datetime import date
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

ARCHIVE_PREFIX = "emails"
ARCHIVE_FORMAT = "mailstack.email-archive.v1"
_CHUNK = 1024 * 1024


def archive_key(created_date: date, email_ids: Iterable[uuid.UUID]) -> str:
    """The same emails always get the same key, so a re-run after a crash overwrites its own
    earlier object instead of adding another."""
    digest = hashlib.sha256("\n".join(sorted(str(i) for i in email_ids)).encode()).hexdigest()
    return f"{ARCHIVE_PREFIX}/created_date={created_date.isoformat()}/batch-{digest[:32]}.jsonl.gz"


class ArchiveFile:
    """One archive object being built in a temporary file, so memory stays bounded."""

    def __init__(self, created_date: date) -> None:
        self.created_date = created_date
        self.email_ids: list[uuid.UUID] = []
        self._file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        # mtime 0: the same emails compress to the same bytes on every run.
        self._gzip = gzip.GzipFile(fileobj=self._file, mode="wb", mtime=0)
        self._sha256 = ""

    def add(self, email_id: uuid.UUID, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        self._gzip.write(line.encode() + b"\n")
        self.email_ids.append(email_id)

    def finish(self) -> None:
        """Close the gzip stream and checksum the compressed bytes."""
        self._gzip.close()
        digest = hashlib.sha256()
        self._file.seek(0)
        while chunk := self._file.read(_CHUNK):
            digest.update(chunk)
        self._sha256 = base64.b64encode(digest.digest()).decode()
        self._file.seek(0)

    @property
    def key(self) -> str:
        return archive_key(self.created_date, self.email_ids)

    @property
    def sha256(self) -> str:
        """Base64 SHA-256 of the object, as S3's `ChecksumSHA256` expects; set by `finish`."""
        return self._sha256

    @property
    def body(self) -> IO[bytes]:
        self._file.seek(0)
        return self._file

    def close(self) -> None:
        self._gzip.close()
        self._file.close()


def read_email_ids(stream: IO[bytes]) -> list[uuid.UUID]:
    """The ids of the emails in an archive object, in order, read one line at a time."""
    with gzip.GzipFile(fileobj=stream, mode="rb") as lines:
        return [uuid.UUID(json.loads(line)["id"]) for line in lines if line.strip()]


class S3Archive:
    def __init__(self, client: "S3Client", bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    def put(self, key: str, body: IO[bytes], sha256: str) -> None:
        """S3 checks the body against `sha256` and refuses the upload if they differ."""
        self._client.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=body,
            ChecksumSHA256=sha256,
            ContentType="application/gzip",
            Metadata={"format": ARCHIVE_FORMAT},
        )

    def stored_email_ids(self, key: str) -> list[uuid.UUID]:
        """Read the object back from S3: the ids it really holds."""
        response = self._client.get_object(Bucket=self._bucket, Key=key)
        body = response["Body"]
        try:
            return read_email_ids(body)  # type: ignore[arg-type]
        finally:
            body.close()
