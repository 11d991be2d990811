"""The EmailSender port, the email it sends, and the provider outcomes it may raise."""

import dataclasses
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from mailstack_core.sink import is_sink_address


@dataclass(frozen=True)
class Mailbox:
    email: str
    name: str | None = None

    def formatted(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str
    disposition: Literal["attachment", "inline"] = "attachment"
    # Only for inline: the HTML refers to the file as `cid:<content_id>`.
    content_id: str | None = None


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
    headers: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()

    @property
    def is_test_mode(self) -> bool:
        """Every recipient is at the sink domain: walked to SENT, never handed to a provider."""
        recipients = (*self.to, *self.cc, *self.bcc)
        return bool(recipients) and all(is_sink_address(m.email) for m in recipients)

    @property
    def recipient_addresses(self) -> tuple[str, ...]:
        """Every recipient's address, lower-case, as the suppression list keeps them."""
        return tuple(dict.fromkeys(m.email.lower() for m in (*self.to, *self.cc, *self.bcc)))

    def without_recipients(self, dropped: Collection[str]) -> "OutgoingEmail | None":
        """This email without the `dropped` addresses (lower-case); None when no `to` is left
        (copies alone are not sent: the providers need a `to`)."""

        def kept(mailboxes: tuple[Mailbox, ...]) -> tuple[Mailbox, ...]:
            return tuple(m for m in mailboxes if m.email.lower() not in dropped)

        to = kept(self.to)
        if not to:
            return None
        return dataclasses.replace(self, to=to, cc=kept(self.cc), bcc=kept(self.bcc))

    @property
    def attachment_bytes(self) -> int:
        return sum(len(attachment.content) for attachment in self.attachments)


@dataclass(frozen=True)
class SendReceipt:
    provider: str
    message_id: str
    transaction_id: str | None = None
    http_status: int | None = None
    # Test mode: no provider was called (the provider is the sink).
    test_mode: bool = False


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
