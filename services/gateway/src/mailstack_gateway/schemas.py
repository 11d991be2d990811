"""Request and response bodies of the gateway's HTTP API."""

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    ValidationInfo,
)

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


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    name: Annotated[SingleLine, Field(max_length=MAX_NAME_CHARS)] | None = None


class EmailCreate(BaseModel):
    """An email to send. Field-level rules live here; cross-field rules in `intake`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    sender: Address = Field(alias="from")
    to: list[Address] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    cc: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[Address] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    reply_to: Address | None = None
    subject: Annotated[SingleLine, Field(min_length=1, max_length=MAX_SUBJECT_CHARS)]
    text: Annotated[StorableText, Field(min_length=1)] | None = None
    html: Annotated[StorableText, Field(min_length=1)] | None = None
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
