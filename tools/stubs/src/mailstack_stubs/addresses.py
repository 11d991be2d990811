"""Email address syntax as strict as the providers are, without DNS or deliverability checks."""

import re

_ATOM = r"[^\s@<>()\[\],;:\"\\.]+"
_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})+")
# ElasticEmail accepts an RFC 5322 mailbox with a display name: `Name <addr>`.
_MAILBOX = re.compile(r"(?P<name>[^<>]*?)\s*<(?P<address>[^<>]+)>")


def is_valid_address(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 320 and _ADDRESS.fullmatch(value) is not None


def is_valid_mailbox(value: object) -> bool:
    """`addr` or `Name <addr>`."""
    if not isinstance(value, str):
        return False
    match = _MAILBOX.fullmatch(value.strip())
    if match is not None:
        return is_valid_address(match["address"])
    return is_valid_address(value.strip())


def mailbox_address(value: object) -> str | None:
    """The address of `addr` or `Name <addr>`; None if it is neither."""
    if not isinstance(value, str):
        return None
    match = _MAILBOX.fullmatch(value.strip())
    address = match["address"] if match is not None else value.strip()
    return address if is_valid_address(address) else None
