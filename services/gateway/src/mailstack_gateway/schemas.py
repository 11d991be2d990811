"""Request and response bodies of the gateway's HTTP API."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field

from mailstack_core.status import EmailStatus

MAX_RECIPIENTS = 50
MAX_SUBJECT_CHARS = 998
MAX_NAME_CHARS = 256


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


SingleLine = Annotated[str, AfterValidator(_single_line)]
StorableText = Annotated[str, AfterValidator(_storable_text)]


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


class Links(BaseModel):
    self: str
    history: str


class EmailAccepted(BaseModel):
    id: uuid.UUID
    status: Literal[EmailStatus.QUEUED] = EmailStatus.QUEUED
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
