"""Prometheus metrics of the processor."""

from prometheus_client import Counter, Gauge

MESSAGES_RECEIVED = Counter("mailstack_processor_messages_received_total", "SQS messages received")
MESSAGES_POISON = Counter(
    "mailstack_processor_messages_poison_total", "Messages that are not a known email message"
)
DISPOSITIONS = Counter(
    "mailstack_processor_dispositions_total", "What happened to each handled message", ["action"]
)
MESSAGES_DROPPED = Counter(
    "mailstack_processor_messages_dropped_total",
    "Messages deleted without sending: their email was CANCELED, or SCHEDULED (not due)",
    ["status"],
)
HANDLING_ERRORS = Counter(
    "mailstack_processor_handling_errors_total",
    "Messages whose handling raised (e.g. database down)",
)
DEAD_LETTERS = Counter(
    "mailstack_processor_dead_letters_total", "Dead-lettered messages looked at", ["outcome"]
)
IN_FLIGHT = Gauge("mailstack_processor_in_flight", "Messages being handled now")
LAST_POLL = Gauge(
    "mailstack_processor_last_poll_timestamp_seconds", "When the queue was last polled"
)
