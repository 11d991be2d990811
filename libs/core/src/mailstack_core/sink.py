"""Test mode: the reserved recipient domain whose emails go through the pipeline to SENT without
reaching any provider (RFC 2606 reserves `.test`, so no real mailbox can be there)."""

SINK_DOMAIN = "sink.mailstack.test"
# What the history's SENT row names as the provider of a test-mode email.
SINK_PROVIDER = "sink"


def is_sink_address(address: str) -> bool:
    """Whether `address` is at the sink domain (the domain compared without case)."""
    _, at, domain = address.rpartition("@")
    return bool(at) and domain.lower() == SINK_DOMAIN
