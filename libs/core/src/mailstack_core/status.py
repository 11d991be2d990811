"""The status vocabulary of an email, shared by the gateway, the processor and the database."""

from enum import StrEnum


class EmailStatus(StrEnum):
    """Where an email is in its life; every change is also appended to its history."""

    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    SENT = "SENT"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in (EmailStatus.SENT, EmailStatus.FAILED)
