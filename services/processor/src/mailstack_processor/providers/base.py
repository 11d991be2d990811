"""The EmailSender port, the email it sends, and the provider outcomes it may raise."""

import uuid
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Mailbox:
    email: str
    name: str | None = None

    def formatted(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True)
class OutgoingEmail:
    id: uuid.UUID
    sender: Mailbox
    to: tuple[Mailbox, ...]
    subject: str
    text: str | None = None
    html: str | None = None
    cc: tuple[Mailbox, ...] = ()
    bcc: tuple[Mailbox, ...] = ()
    reply_to: Mailbox | None = None


@dataclass(frozen=True)
class SendReceipt:
    provider: str
    message_id: str
    transaction_id: str | None = None
    http_status: int | None = None


@dataclass
class ProviderError(Exception):
    """A provider did not accept the email; subclasses say what that means for delivery."""

    provider: str
    reason: str
    http_status: int | None = None
    # True when the provider may have accepted the email after all (e.g. a read timeout).
    outcome_unknown: bool = False
    retry_after_seconds: float | None = field(default=None, kw_only=True)

    def __str__(self) -> str:
        status = f" HTTP {self.http_status}" if self.http_status is not None else ""
        return f"{self.provider}{status}: {self.reason}"

    @property
    def kind(self) -> str:
        raise NotImplementedError


class ProviderUnavailableError(ProviderError):
    """Transient: timeouts, connection failures, 408, 429, 5xx. Fall over; retry later."""

    @property
    def kind(self) -> str:
        return "transient"


class ProviderMisconfiguredError(ProviderError):
    """Our side is wrong for this provider (401/403, unknown endpoint). Fall over and alert."""

    @property
    def kind(self) -> str:
        return "configuration"


class ProviderRejectedError(ProviderError):
    """Permanent for this email (400/413/422): no other provider will take it either."""

    @property
    def kind(self) -> str:
        return "permanent"


class EmailSender(Protocol):
    name: str

    async def send(self, email: OutgoingEmail) -> SendReceipt:
        """Send once; raise a ProviderError subclass on anything but acceptance."""
