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
    # What the provider reported after SENT (its event webhook; see DELIVERY_ORDER).
    DEFERRED = "DEFERRED"
    DELIVERED = "DELIVERED"
    OPENED = "OPENED"
    CLICKED = "CLICKED"
    UNSUBSCRIBED = "UNSUBSCRIBED"
    BOUNCED = "BOUNCED"
    COMPLAINED = "COMPLAINED"

    @property
    def is_terminal(self) -> bool:
        """Nothing more for the processor to do: it was handed to a provider, or never will be."""
        return self in (EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.CANCELED) or (
            self in DELIVERY_ORDER
        )

    @property
    def is_cancelable(self) -> bool:
        """Not yet claimed by a processor (PROCESSING) nor final."""
        return self in (EmailStatus.SCHEDULED, EmailStatus.QUEUED)

    @property
    def is_provider_event(self) -> bool:
        """A status only a provider's event sets (after SENT)."""
        return self in DELIVERY_ORDER

    @property
    def delivery_rank(self) -> int:
        """How far along delivery an email is: 0 before any provider event, then its place in
        DELIVERY_ORDER; an event moves the email's status only to a higher rank."""
        return DELIVERY_ORDER.index(self) + 1 if self in DELIVERY_ORDER else 0

    @property
    def is_delivery_final(self) -> bool:
        """BOUNCED and COMPLAINED: no later event changes the email's status."""
        return self in (EmailStatus.BOUNCED, EmailStatus.COMPLAINED)


# The order in which provider events move an email's status forward. An event of a lower rank
# than the email's status (an open after a click, a deferral after the delivery, anything
# after a bounce or a complaint) is only a history row. BOUNCED and COMPLAINED are final.
DELIVERY_ORDER: tuple[EmailStatus, ...] = (
    EmailStatus.DEFERRED,
    EmailStatus.DELIVERED,
    EmailStatus.OPENED,
    EmailStatus.CLICKED,
    EmailStatus.UNSUBSCRIBED,
    EmailStatus.BOUNCED,
    EmailStatus.COMPLAINED,
)
