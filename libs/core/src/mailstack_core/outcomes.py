"""The outcome words written into history rows (`detail.outcome`) and read back by the jobs.

One vocabulary for every writer and reader: the gateway writes `accepted`, the processor the
attempt and final outcomes, the retry job reads the transient finals and writes its own.
"""

from enum import StrEnum


class Outcome(StrEnum):
    # The gateway accepted the email (QUEUED, or SCHEDULED with its `send_at`).
    ACCEPTED = "accepted"
    # By the gateway's scheduler: a SCHEDULED email's `send_at` has come (QUEUED).
    DUE = "due"
    # By the gateway: its sender canceled it (CANCELED).
    CANCELED = "canceled"
    # One provider attempt (the history row names the provider).
    FAILED = "failed"
    UNKNOWN = "unknown"  # a timeout: the provider may or may not have sent it
    # Final, by the processor.
    REJECTED = "rejected"  # permanent: a provider refused the email itself
    # Permanent: an attachment is gone from its bucket (expired, or never stored).
    ATTACHMENT_MISSING = "attachment_missing"
    OUT_OF_ATTEMPTS = "out_of_attempts"
    # Permanent: every recipient is on the tenant's suppression list; no provider was called.
    # (A partly suppressed email is sent to the others; its SENT row lists who was dropped.)
    SUPPRESSED = "suppressed"
    DEAD_LETTERED = "dead_lettered"
    # Not final: the message comes back after a backoff.
    RETRY_SCHEDULED = "retry_scheduled"
    # By the gateway's reconciler: the email's queue message was presumed lost and sent again.
    REPUBLISHED = "republished"
    # By the retry job.
    REQUEUED = "requeued"
    RETRIES_EXHAUSTED = "retries_exhausted"
    # By the gateway: a provider's event (DELIVERED, BOUNCED, ...), from its event webhook.
    PROVIDER_EVENT = "provider_event"


# Final outcomes whose cause may pass (every provider failed transiently): the retry job may
# queue such an email again. REJECTED is permanent and never retried.
TRANSIENT_FINAL_OUTCOMES = (Outcome.OUT_OF_ATTEMPTS, Outcome.DEAD_LETTERED)
