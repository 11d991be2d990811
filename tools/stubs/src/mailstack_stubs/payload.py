"""Reading a send request's body and the headers worth keeping in the record."""

import gzip
import json
import zlib
from typing import Any

from starlette.datastructures import Headers

# Only what a test asserts on; the credential headers are never recorded.
RECORDED_HEADERS = ("content-type", "content-encoding", "idempotency-key", "user-agent")


class MalformedBodyError(Exception):
    """The body is not JSON (or not gzip when it says it is)."""


def decode_json(raw: bytes, headers: Headers) -> Any:
    if headers.get("content-encoding", "").lower() == "gzip":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise MalformedBodyError("body is not valid gzip") from error
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedBodyError("body is not valid JSON") from error


def recorded_headers(headers: Headers) -> dict[str, str]:
    return {name: headers[name] for name in RECORDED_HEADERS if name in headers}
