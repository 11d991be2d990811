"""Request and response bodies of the suppression list and the provider event routes."""

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

SuppressionReasonName = Literal["hard_bounce", "complaint", "manual"]


class SuppressionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr = Field(examples=["someone@example.org"])
    reason: SuppressionReasonName = Field(
        default="manual",
        description="Why: `manual` (the default), or a bounce or complaint known elsewhere",
    )


class SuppressionPublic(BaseModel):
    email: str = Field(description="Lower-case; its emails are not sent to it")
    reason: SuppressionReasonName = Field(
        description="`hard_bounce` or `complaint` (added by a provider's event), or `manual`"
    )
    detail: str | None = Field(description="Which provider event, or that the API added it")
    email_id: uuid.UUID | None = Field(description="The email whose event added it, if one did")
    provider: str | None
    created_at: datetime


class SuppressionPage(BaseModel):
    items: list[SuppressionPublic]
    next_cursor: str | None


class EventsReceived(BaseModel):
    """What became of a request's events; answered 200 even when none matched an email."""

    received: int
    recorded: int
    duplicates: int = Field(description="Seen before (the provider's retry): not recorded again")
    unknown_emails: int = Field(description="No email has this message id: counted, not stored")
    ignored: int = Field(description="Kinds mailstack does not track (e.g. SendGrid `processed`)")
