"""The queue message: what the gateway publishes and the processor consumes (ids, never bodies)."""

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

SCHEMA_VERSION: Literal[1] = 1


class InvalidQueueMessageError(ValueError):
    """A queue message that is not a known version of EmailQueuedMessage."""


class EmailQueuedMessage(BaseModel):
    """Version 1: an email was accepted and waits for delivery; the body lives in Postgres."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = SCHEMA_VERSION
    type: Literal["email.queued"] = "email.queued"
    email_id: uuid.UUID

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> "EmailQueuedMessage":
        try:
            return cls.model_validate_json(raw)
        except ValidationError as error:
            raise InvalidQueueMessageError(
                f"not an email.queued v{SCHEMA_VERSION} message: {error.errors(include_url=False)}"
            ) from error
