"""What the gateway (registration) and the dispatcher (delivery) agree on about webhooks: the
event types, which URLs may be registered, and which addresses may never be called (SSRF).

Event types follow the email statuses: `email.` + the lower-case status, so a status added to
EmailStatus is an event type at once. An address is blocked unless it is globally routable
unicast: private, loopback, link-local (169.254.169.254, the cloud metadata service, is one),
multicast, unspecified, shared, reserved and documentation ranges, for IPv4 and IPv6, and IPv6
addresses that embed a blocked IPv4 one (mapped, 6to4, Teredo, NAT64). The allow-list
(WEBHOOK_ALLOWED_NETWORKS, CIDRs) lets the local stack and the tests reach 127.0.0.0/8.
"""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from mailstack_core.status import EmailStatus

EVENT_PREFIX = "email."
ALL_EVENTS = "*"
# What POST /v1/webhooks/{id}/test sends, whatever the endpoint subscribes to.
TEST_EVENT = "webhook.test"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def event_type(status: EmailStatus | str) -> str:
    return f"{EVENT_PREFIX}{str(status).lower()}"


def subscribable_events() -> frozenset[str]:
    """Every event type an endpoint may subscribe to, from the statuses known now."""
    return frozenset({ALL_EVENTS, *(event_type(status) for status in EmailStatus)})


class InvalidWebhookUrlError(ValueError):
    """A URL the dispatcher would never call."""


class BlockedAddressError(InvalidWebhookUrlError):
    def __init__(self, host: str, address: IPAddress) -> None:
        super().__init__(f"{host} resolves to {address}, which is not a public address")
        self.address = address


def parse_networks(values: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs from a comma-separated string or a list (an address alone is a /32 or /128)."""
    words = values.split(",") if isinstance(values, str) else values
    return tuple(ipaddress.ip_network(word.strip(), strict=False) for word in words if word.strip())


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    embedded = [address.ipv4_mapped, address.sixtofour]
    if address.teredo is not None:
        embedded.extend(address.teredo)
    if address in _NAT64:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [v4 for v4 in embedded if v4 is not None]


def _public(address: IPAddress) -> bool:
    return address.is_global and not address.is_multicast


def address_allowed(address: IPAddress, allowed: Iterable[IPNetwork] = ()) -> bool:
    """Whether the dispatcher may connect to `address`: an allow-listed one, or a public one
    (an IPv6 address that embeds an IPv4 one must pass for both)."""
    allowed = tuple(allowed)
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        candidates.extend(_embedded_ipv4(address))
    if any(
        candidate in network
        for candidate in candidates
        for network in allowed
        if candidate.version == network.version
    ):
        return True
    return all(_public(candidate) for candidate in candidates)


def check_address(host: str, address: str, allowed: Iterable[IPNetwork] = ()) -> IPAddress:
    """The address, or BlockedAddressError."""
    parsed = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if not address_allowed(parsed, allowed):
        raise BlockedAddressError(host, parsed)
    return parsed


@dataclass(frozen=True)
class WebhookUrl:
    scheme: str
    host: str
    port: int


def check_url(url: str, http_hosts: Iterable[str] = ()) -> WebhookUrl:
    """The URL's parts, or InvalidWebhookUrlError: https (http only to a host in `http_hosts`),
    a host, no credentials, at most 2048 characters. Its addresses are checked separately."""
    if len(url) > 2048:
        raise InvalidWebhookUrlError("longer than 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidWebhookUrlError(f"not a valid URL: {error}") from error
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidWebhookUrlError("must be an absolute https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookUrlError("must not carry credentials")
    if parts.fragment:
        raise InvalidWebhookUrlError("must not have a fragment")
    if parts.scheme == "http" and host not in {h.strip().lower() for h in http_hosts}:
        raise InvalidWebhookUrlError("must use https")
    return WebhookUrl(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))
