"""The status vocabulary of an email, shared by the gateway, the processor and the database."""

from enum import StrEnum


class EmailStatus(StrEnum):
    """Where an email is in its life; every change is also appended to its history."""

    # Accepted with a `send_at` in the future: the gateway's scheduler queues it when it is due.
    SCHEDULED = "SCHEDULED"
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    SENT = "SENT"
    FAILED = "FAILED"
    # Canceled by its sender before a processor claimed it; never sent.
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        return self in (EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.CANCELED)

    @property
    def is_cancelable(self) -> bool:
        """Not yet claimed by a processor (PROCESSING) nor final."""
        return self in (EmailStatus.SCHEDULED, EmailStatus.QUEUED)
