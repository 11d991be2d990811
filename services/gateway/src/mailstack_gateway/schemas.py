"""Request and response bodies of the gateway's HTTP API."""

import base64
import binascii
import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal

import email_validator
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic.networks import validate_email
from pydantic_core import PydanticCustomError

from mailstack_core.sink import SINK_DOMAIN, is_sink_address
from mailstack_core.status import EmailStatus

MAX_RECIPIENTS = 50
MAX_SUBJECT_CHARS = 998
MAX_NAME_CHARS = 256
MAX_BATCH_EMAILS = 100
# How far ahead `send_at` may be, and how far behind (a clock a little off, a slow client).
MAX_SCHEDULE_AHEAD = timedelta(days=30)
MAX_SCHEDULE_BEHIND = timedelta(minutes=1)
# Validation context key: the time `send_at` is judged against (the request's arrival).
NOW = "now"
SEND_AT_EXAMPLE = "2026-12-24T09:00:00+01:00"
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
# Bodies stay in Postgres rows, so they keep the size the whole request had before
# attachments raised the request limit.
MAX_BODY_CHARS = 1_048_576

MAX_ATTACHMENTS = 20
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024  # decoded, all attachments of an email together
MAX_FILENAME_CHARS = 255
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# RFC 6838 type/subtype names, without parameters.
_MIME_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
MIME_TYPE_PATTERN = rf"^{_MIME_NAME}/{_MIME_NAME}$"
# A Content-ID without its angle brackets (RFC 2392 msg-id characters, no spaces).
CONTENT_ID_PATTERN = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]{1,255}$"

MAX_HEADERS = 20
MAX_HEADER_NAME_CHARS = 100
MAX_HEADER_VALUE_CHARS = 998  # RFC 5322's line length
# RFC 5322 field names: printable US-ASCII but the colon.
HEADER_NAME_PATTERN = r"^[\x21-\x39\x3b-\x7e]+$"
# Set by mailstack or by the providers; a client may not replace them (compared without case).
RESERVED_HEADERS = frozenset(
    {
        "bcc",
        "cc",
        "content-disposition",
        "content-id",
        "content-transfer-encoding",
        "content-type",
        "date",
        "dkim-signature",
        "from",
        "message-id",
        "mime-version",
        "received",
        "reply-to",
        "return-path",
        "sender",
        "subject",
        "to",
        "x-mailstack-email-id",
        "x-sg-eid",
        "x-sg-id",
    }
)

MAX_TAGS = 10
TAG_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_METADATA_PAIRS = 20
MAX_METADATA_BYTES = 2048  # the pairs as compact JSON, UTF-8
MAX_METADATA_VALUE_CHARS = 500
METADATA_KEY_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
# Keys the providers' custom args already carry for mailstack (the email's id).
RESERVED_METADATA_PREFIX = "mailstack_"


def _storable_text(value: str) -> str:
    """Text Postgres can store and a provider can send: no NUL, no lone surrogate."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from error
    return value


def _single_line(value: str) -> str:
    """A value that becomes a mail header: no line break may smuggle in another header."""
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain CR or LF (header injection)")
    return _storable_text(value)


def _rfc3339_text(value: object) -> object:
    """A string in RFC 3339's date-time form, offset included; not a number, not a bare date."""
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise ValueError(f"must be an RFC 3339 date-time with an offset, e.g. {SEND_AT_EXAMPLE}")
    return value


def _within_schedule_window(value: datetime, info: ValidationInfo) -> datetime:
    context = info.context if isinstance(info.context, dict) else {}
    now: datetime = context.get(NOW) or datetime.now(UTC)
    if value < now - MAX_SCHEDULE_BEHIND:
        raise ValueError("must not be more than a minute in the past")
    if value > now + MAX_SCHEDULE_AHEAD:
        raise ValueError("must be at most 30 days ahead")
    return value


SingleLine = Annotated[str, AfterValidator(_single_line)]
StorableText = Annotated[str, AfterValidator(_storable_text)]
SendAt = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339_text),
    AfterValidator(_within_schedule_window),
]


def _email_address(value: str) -> str:
    """An address as pydantic's EmailStr checks it; the sink domain of test mode too, a reserved
    `.test` name that the check otherwise refuses (as it should for any real recipient)."""
    if not is_sink_address(value):
        return validate_email(value)[1]
    try:
        checked = email_validator.validate_email(
            value, check_deliverability=False, test_environment=True
        )
    except email_validator.EmailNotValidError as error:
        raise PydanticCustomError(
            "value_error", "value is not a valid email address: {reason}", {"reason": str(error)}
        ) from error
    return checked.normalized


EmailAddress = Annotated[
    str,
    AfterValidator(_email_address),
    WithJsonSchema({"type": "string", "format": "email"}),
]


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Annotated[
        EmailAddress,
        Field(
            description=(
                f"A mailbox address. Test mode: an email whose every recipient is at "
                f"`{SINK_DOMAIN}` goes through the whole pipeline to SENT without reaching any "
                "provider; mixing such recipients with real ones is refused (422)."
            ),
            examples=["alex@example.com", f"signup-test@{SINK_DOMAIN}"],
        ),
    ]
    name: Annotated[SingleLine, Field(max_length=MAX_NAME_CHARS)] | None = None


def _filename(value: str) -> str:
    if "/" in value or "\\" in value:
        raise ValueError("must be a bare file name, without a path separator (/ or \\)")
    if any(ord(character) < 0x20 or 0x7F <= ord(character) <= 0x9F for character in value):
        raise ValueError("must not contain control characters")
    if value in (".", ".."):
        raise ValueError("must name a file, not . or ..")
    return _storable_text(value)


def _base64_content(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("must be a base64 string")
    if not value:
        raise ValueError("must not be empty")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(
            f"is not valid base64 (standard alphabet, padded, no line breaks): {error}"
        ) from error


def base64_decoded_size(value: str) -> int:
    """The decoded size of a base64 string, without decoding it."""
    return len(value) // 4 * 3 - value[-2:].count("=")


class AttachmentCreate(BaseModel):
    """A file sent with the email. Its bytes are kept in S3 until the email is sent, never in
    the database; the request kept for audit records its name, size and SHA-256 instead."""

    model_config = ConfigDict(extra="forbid")

    filename: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_FILENAME_CHARS,
            description="The file's name as recipients see it: no path, no control characters.",
            examples=["invoice-1234.pdf"],
        ),
        AfterValidator(_filename),
    ]
    content: Annotated[
        bytes,
        BeforeValidator(_base64_content),
        WithJsonSchema(
            {
                "type": "string",
                "contentEncoding": "base64",
                "minLength": 1,
                "description": (
                    "The file, base64 (RFC 4648, standard alphabet, padded, no line breaks). "
                    f"All attachments together: at most {MAX_ATTACHMENT_BYTES} bytes decoded."
                ),
                "examples": ["JVBERi0xLjQK"],
            }
        ),
    ]
    content_type: Annotated[
        str,
        Field(
            pattern=MIME_TYPE_PATTERN,
            description="The MIME type, without parameters.",
            examples=["application/pdf", "image/png"],
        ),
    ] = DEFAULT_CONTENT_TYPE
    disposition: Annotated[
        Literal["attachment", "inline"],
        Field(
            description="`inline` for an image the HTML shows by its `cid:`.",
            examples=["attachment", "inline"],
        ),
    ] = "attachment"
    content_id: (
        Annotated[
            str,
            Field(
                pattern=CONTENT_ID_PATTERN,
                description=(
                    "Required for (and only for) `inline`: the HTML refers to the file as "
                    '`<img src="cid:logo">`. Unique within the email.'
                ),
                examples=["logo"],
            ),
        ]
        | None
    ) = None

    @cached_property
    def size(self) -> int:
        return len(self.content)

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def _header_name(value: str) -> str:
    if not re.fullmatch(HEADER_NAME_PATTERN, value):
        raise ValueError(
            "must be a header field name: printable ASCII without spaces or colons (RFC 5322)"
        )
    if value.lower() in RESERVED_HEADERS:
        raise ValueError(f"{value} is set by mailstack or the provider and cannot be given")
    return value


def _header_value(value: str) -> str:
    if any(character in value for character in "\r\n\x00"):
        raise ValueError("must not contain CR, LF or NUL (header injection)")
    if any(ord(character) < 0x20 and character != "\t" for character in value):
        raise ValueError("must not contain control characters")
    return _storable_text(value)


HeaderName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_HEADER_NAME_CHARS,
        json_schema_extra={"pattern": HEADER_NAME_PATTERN},
    ),
    AfterValidator(_header_name),
]
HeaderValue = Annotated[
    str, Field(min_length=1, max_length=MAX_HEADER_VALUE_CHARS), AfterValidator(_header_value)
]
Tag = Annotated[str, Field(pattern=TAG_PATTERN)]


def _metadata_key(value: str) -> str:
    if value.lower().startswith(RESERVED_METADATA_PREFIX):
        raise ValueError(f"keys starting with {RESERVED_METADATA_PREFIX} are reserved")
    return value


MetadataKey = Annotated[str, Field(pattern=METADATA_KEY_PATTERN), AfterValidator(_metadata_key)]
MetadataValue = Annotated[StorableText, Field(max_length=MAX_METADATA_VALUE_CHARS)]


class EmailCreate(BaseModel):
    """An email to send. Field-level rules live here; cross-field rules in `intake`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    sender: Address = Field(alias="from")
    to: list[Address] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    reply_to: Address | None = None
    subject: Annotated[SingleLine, Field(min_length=1, max_length=MAX_SUBJECT_CHARS)]
    text: Annotated[StorableText, Field(min_length=1, max_length=MAX_BODY_CHARS)] | None = None
    html: Annotated[StorableText, Field(min_length=1, max_length=MAX_BODY_CHARS)] | None = None
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        max_length=MAX_HEADERS,
        description=(
            f"Extra mail headers, at most {MAX_HEADERS}: names as RFC 5322 allows (at most "
            f"{MAX_HEADER_NAME_CHARS} characters, each name once whatever its case), values "
            f"of at most {MAX_HEADER_VALUE_CHARS} characters without CR, LF or NUL. Headers "
            "that mailstack or the providers set (From, To, Cc, Bcc, Subject, Reply-To, "
            "Sender, Date, Message-ID, MIME-Version, Content-*, DKIM-Signature, Return-Path, "
            "Received, X-SG-ID, X-SG-EID, X-Mailstack-Email-Id) are refused."
        ),
        examples=[{"X-Entity-Ref-ID": "order-1234", "List-Unsubscribe": "<mailto:u@example.com>"}],
    )
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description=(
            f"At most {MAX_TAGS} distinct tags of 1-64 letters, digits, `_` or `-`, for "
            "`GET /v1/emails?tag=` and the providers' reports (SendGrid categories; "
            "ElasticEmail's channel is the first tag)."
        ),
        examples=[["welcome", "onboarding"]],
    )
    metadata: dict[MetadataKey, MetadataValue] = Field(
        default_factory=dict,
        max_length=MAX_METADATA_PAIRS,
        description=(
            f"At most {MAX_METADATA_PAIRS} string pairs, {MAX_METADATA_BYTES} bytes as JSON, "
            "carried to the providers (SendGrid custom_args, ElasticEmail Postback) so their "
            f"events can be matched; keys of 1-64 letters, digits, `_`, `.` or `-`, not "
            f"starting with `{RESERVED_METADATA_PREFIX}`."
        ),
        examples=[{"user_id": "42", "plan": "pro"}],
    )
    attachments: list[AttachmentCreate] = Field(
        default_factory=list,
        max_length=MAX_ATTACHMENTS,
        description=(
            f"At most {MAX_ATTACHMENTS} files, {MAX_ATTACHMENT_BYTES} bytes decoded in all."
        ),
        examples=[
            [
                {
                    "filename": "invoice-1234.pdf",
                    "content": "JVBERi0xLjQK",
                    "content_type": "application/pdf",
                }
            ]
        ],
    )
    send_at: SendAt | None = Field(
        default=None,
        description=(
            "Send later: an RFC 3339 date-time with an offset, at most 30 days ahead and no more "
            "than a minute in the past. The email is SCHEDULED until then (cancelable), then "
            "QUEUED within about a second. Omitted: sent at once."
        ),
        examples=[SEND_AT_EXAMPLE],
    )


class EmailBatchCreate(BaseModel):
    """Up to 100 emails accepted together: all of them, or (422) none."""

    model_config = ConfigDict(extra="forbid")

    emails: list[EmailCreate] = Field(
        min_length=1,
        max_length=MAX_BATCH_EMAILS,
        description=(
            "1 to 100 emails, each as the body of POST /v1/emails. One invalid email refuses "
            "the whole batch; its errors are named like `emails[3].to[0].email`."
        ),
        examples=[
            [
                {
                    "from": {"email": "app@example.com"},
                    "to": [{"email": "ada@example.com"}],
                    "subject": "Your receipt",
                    "text": "Thanks, Ada",
                    "tags": ["receipt"],
                },
                {
                    "from": {"email": "app@example.com"},
                    "to": [{"email": "alan@example.com"}],
                    "subject": "Your receipt",
                    "text": "Thanks, Alan",
                    "send_at": SEND_AT_EXAMPLE,
                },
            ]
        ],
    )


class Links(BaseModel):
    self: str
    history: str


class EmailAccepted(BaseModel):
    id: uuid.UUID
    status: Literal[EmailStatus.QUEUED, EmailStatus.SCHEDULED] = Field(
        default=EmailStatus.QUEUED,
        description="QUEUED: on its way now; SCHEDULED: waits for its `send_at`",
        examples=[EmailStatus.QUEUED],
    )
    links: Links


class EmailBatchAccepted(BaseModel):
    items: list[EmailAccepted] = Field(description="One per email, in the order of the request")


class EmailCanceled(BaseModel):
    id: uuid.UUID
    status: Literal[EmailStatus.CANCELED] = EmailStatus.CANCELED
    links: Links


class AttachmentPublic(BaseModel):
    """What is kept of an attachment in the database: its description, never its bytes."""

    filename: str
    content_type: str
    disposition: Literal["attachment", "inline"]
    content_id: str | None
    size: int = Field(description="Bytes, decoded.")
    sha256: str = Field(description="SHA-256 of the decoded bytes, hex.")


class EmailPublic(BaseModel):
    id: uuid.UUID
    status: EmailStatus
    provider: str | None
    provider_message_id: str | None
    sender: Address = Field(serialization_alias="from")
    to: list[Address]
    cc: list[Address]
    bcc: list[Address]
    reply_to: Address | None
    subject: str
    headers: dict[str, str]
    tags: list[str]
    metadata: dict[str, str]
    attachments: list[AttachmentPublic]
    attempts: int
    last_error: str | None
    send_at: datetime | None = Field(description="When it was scheduled for; null: at once")
    created_at: datetime
    updated_at: datetime
    links: Links


class HistoryEntry(BaseModel):
    status: EmailStatus
    provider: str | None
    detail: dict[str, Any]
    at: datetime


class EmailHistory(BaseModel):
    id: uuid.UUID
    history: list[HistoryEntry]


class EmailSummary(BaseModel):
    id: uuid.UUID
    status: EmailStatus
    subject: str
    tags: list[str]
    provider: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    links: Links


class EmailPage(BaseModel):
    items: list[EmailSummary]
    next_cursor: str | None


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    errors: list[FieldError]


class Problem(BaseModel):
    error: str
    message: str


class NotCancelable(Problem):
    status: EmailStatus = Field(
        description="The email's status now: a processor claimed it, or it is final",
        examples=[EmailStatus.SENT],
    )
