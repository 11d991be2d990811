"""Which webhook URLs and addresses are allowed (SSRF guard), and the event vocabulary."""

import ipaddress

import pytest

from mailstack_core import webhooks as hooks
from mailstack_core.status import EmailStatus

LOOPBACK = hooks.parse_networks("127.0.0.0/8")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",  # shared address space (carrier-grade NAT)
        "169.254.169.254",  # cloud metadata service
        "0.0.0.0",  # noqa: S104 - an address refused, nothing binds it
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "ff0e::1",  # global-scope multicast
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "2002:a9fe:a9fe::1",  # 6to4 around 169.254.169.254
        "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
    ],
)
def test_private_loopback_link_local_multicast_and_unspecified_addresses_are_blocked(
    address: str,
) -> None:
    assert not hooks.address_allowed(ipaddress.ip_address(address))
    with pytest.raises(hooks.BlockedAddressError, match="not a public address"):
        hooks.check_address("example.org", address)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert hooks.address_allowed(ipaddress.ip_address(address))


def test_the_allow_list_opens_exactly_its_networks_in_both_notations() -> None:
    assert hooks.address_allowed(ipaddress.ip_address("127.0.0.1"), LOOPBACK)
    assert hooks.address_allowed(ipaddress.ip_address("127.9.9.9"), LOOPBACK)
    assert hooks.address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), LOOPBACK)
    assert not hooks.address_allowed(ipaddress.ip_address("::1"), LOOPBACK)
    assert not hooks.address_allowed(ipaddress.ip_address("169.254.169.254"), LOOPBACK)
    assert not hooks.address_allowed(ipaddress.ip_address("10.0.0.1"), LOOPBACK)
    assert hooks.address_allowed(ipaddress.ip_address("::1"), hooks.parse_networks("::1"))


def test_an_ipv6_zone_id_is_ignored_not_a_way_around_the_check() -> None:
    with pytest.raises(hooks.BlockedAddressError):
        hooks.check_address("host", "fe80::1%eth0")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.org/hook", "must use https"),
        ("ftp://example.org/hook", "https"),
        ("https:///hook", "https"),
        ("https://user:pw@example.org/hook", "credentials"),
        ("https://example.org/hook#part", "fragment"),
        ("https://example.org:99999/hook", "not a valid URL"),
        ("https://example.org/" + "a" * 2048, "2048"),
    ],
)
def test_urls_that_are_refused(url: str, message: str) -> None:
    with pytest.raises(hooks.InvalidWebhookUrlError, match=message):
        hooks.check_url(url)


def test_http_only_to_an_allow_listed_host() -> None:
    assert hooks.check_url("http://127.0.0.1:8080/h", ["127.0.0.1"]).port == 8080
    assert hooks.check_url("https://Example.org/h").host == "example.org"
    assert hooks.check_url("https://example.org/h").port == 443
    with pytest.raises(hooks.InvalidWebhookUrlError):
        hooks.check_url("http://127.0.0.2/h", ["127.0.0.1"])


def test_every_status_is_an_event_type_including_ones_added_later() -> None:
    events = hooks.subscribable_events()
    assert {"email.queued", "email.sent", "email.failed", "*"} <= events
    assert all(hooks.event_type(status) in events for status in EmailStatus)
    assert hooks.event_type("DELIVERED") == "email.delivered"
