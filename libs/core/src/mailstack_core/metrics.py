"""Every Prometheus metric mailstack exposes, listed once: name, type, labels and meaning.

The services build their collectors from this list (mailstack_core.prometheus), and the
Grafana dashboard and the table in docs/operations.md are generated from it
(mailstack_core.dashboards), so none of them can name a metric that does not exist.
"""

import enum
from dataclasses import dataclass


class Kind(enum.StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Service(enum.StrEnum):
    GATEWAY = "gateway"
    PROCESSOR = "processor"
    DISPATCHER = "dispatcher"


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    # How a dashboard adds up the series of several instances (gauges) and which labels it
    # keeps (None: all of them).
    aggregation: str = "sum"
    group_by: tuple[str, ...] | None = None
    buckets: tuple[float, ...] | None = None

    @property
    def service(self) -> Service:
        return Service(self.name.split("_")[1])

    @property
    def dashboard_labels(self) -> tuple[str, ...]:
        return self.labels if self.group_by is None else self.group_by


class SendOutcome(enum.StrEnum):
    """The `outcome` label of mailstack_processor_sends_total: what one provider call ended in."""

    SENT = "sent"
    REJECTED = "rejected"  # permanent for this email
    UNAVAILABLE = "unavailable"  # transient, and the provider certainly did not send it
    UNKNOWN = "unknown"  # a timeout: the provider may have sent it
    MISCONFIGURED = "misconfigured"  # our side is wrong for this provider


# Provider calls take milliseconds to seconds (the provider timeout is at most 30 s).
PROVIDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# -- gateway ----------------------------------------------------------------------------------
GATEWAY_REQUEST_SECONDS = Metric(
    "mailstack_gateway_request_seconds",
    Kind.HISTOGRAM,
    "HTTP request latency by method, route and status (its _count counts the requests)",
    ("method", "route", "status"),
    group_by=("route",),
)
GATEWAY_EMAILS_ACCEPTED = Metric(
    "mailstack_gateway_emails_accepted_total", Kind.COUNTER, "Emails accepted with 202"
)
GATEWAY_EMAILS_REJECTED = Metric(
    "mailstack_gateway_emails_rejected_total",
    Kind.COUNTER,
    "Emails refused, by reason",
    ("reason",),
)
GATEWAY_AUTH_FAILURES = Metric(
    "mailstack_gateway_auth_failures_total",
    Kind.COUNTER,
    "Requests refused for missing or invalid credentials, by credential kind and reason",
    ("kind", "reason"),
)
GATEWAY_RATE_LIMITED = Metric(
    "mailstack_gateway_rate_limited_total",
    Kind.COUNTER,
    "Requests answered 429, by limit",
    ("limit",),
)
GATEWAY_RATE_LIMIT_UNAVAILABLE = Metric(
    "mailstack_gateway_rate_limit_unavailable_total",
    Kind.COUNTER,
    "Requests let through without a rate-limit check because Redis was unreachable (fail open)",
)
GATEWAY_EMAILS_REPUBLISHED = Metric(
    "mailstack_gateway_emails_republished_total",
    Kind.COUNTER,
    "Stranded emails (no sign of life past STRANDED_AFTER_SECONDS) put back in the outbox",
)
GATEWAY_OUTBOX_DEPTH = Metric(
    "mailstack_gateway_outbox_depth",
    Kind.GAUGE,
    "Accepted emails whose queue message is not published yet (outbox rows), as of the "
    "reconciler's last round",
    aggregation="max",
)
GATEWAY_OUTBOX_OLDEST_AGE = Metric(
    "mailstack_gateway_outbox_oldest_age_seconds",
    Kind.GAUGE,
    "Age of the oldest outbox row (0 when the outbox is empty), as of the reconciler's last round",
    aggregation="max",
)
GATEWAY_PROVIDER_EVENTS = Metric(
    "mailstack_gateway_provider_events_total",
    Kind.COUNTER,
    "Provider events received by provider and result: recorded, duplicate (seen before), "
    "unknown_email (no email has its message id; answered 2xx all the same), ignored (a kind "
    "mailstack does not track)",
    ("provider", "result"),
)
GATEWAY_PROVIDER_EVENTS_REFUSED = Metric(
    "mailstack_gateway_provider_event_requests_refused_total",
    Kind.COUNTER,
    "Provider event requests answered 401 (nothing stored), by provider and reason: signature, "
    "stale timestamp, wrong secret, not configured",
    ("provider", "reason"),
)

# -- processor --------------------------------------------------------------------------------
PROCESSOR_MESSAGES_RECEIVED = Metric(
    "mailstack_processor_messages_received_total", Kind.COUNTER, "SQS messages received"
)
PROCESSOR_MESSAGES_POISON = Metric(
    "mailstack_processor_messages_poison_total",
    Kind.COUNTER,
    "Messages that are not a known email message",
)
PROCESSOR_DISPOSITIONS = Metric(
    "mailstack_processor_dispositions_total",
    Kind.COUNTER,
    "What happened to each handled message: delete, retry, dead_letter",
    ("action",),
)
PROCESSOR_MESSAGES_DROPPED = Metric(
    "mailstack_processor_messages_dropped_total",
    Kind.COUNTER,
    "Messages deleted without sending: their email was CANCELED, or SCHEDULED (not due)",
    ("status",),
)
PROCESSOR_HANDLING_ERRORS = Metric(
    "mailstack_processor_handling_errors_total",
    Kind.COUNTER,
    "Messages whose handling raised (e.g. database down)",
)
PROCESSOR_RETRIES = Metric(
    "mailstack_processor_retries_total",
    Kind.COUNTER,
    "Deliveries that every provider failed, put back on the queue for a later attempt",
)
PROCESSOR_DEAD_LETTERS = Metric(
    "mailstack_processor_dead_letters_total",
    Kind.COUNTER,
    "Dead-lettered messages looked at by the dead-letter watcher, by what it did to the email",
    ("outcome",),
)
PROCESSOR_SENDS = Metric(
    "mailstack_processor_sends_total",
    Kind.COUNTER,
    "Provider calls by provider and outcome (sent, rejected, unavailable, unknown, misconfigured)",
    ("provider", "outcome"),
)
PROCESSOR_PROVIDER_SECONDS = Metric(
    "mailstack_processor_provider_seconds",
    Kind.HISTOGRAM,
    "Latency of provider calls, whatever their outcome",
    ("provider",),
    buckets=PROVIDER_BUCKETS,
)
PROCESSOR_FAILOVERS = Metric(
    "mailstack_processor_failovers_total",
    Kind.COUNTER,
    "Deliveries that moved on to the next provider after one failed",
    ("from_provider", "to_provider"),
)
PROCESSOR_BREAKER_OPEN = Metric(
    "mailstack_processor_breaker_open",
    Kind.GAUGE,
    "1 while a provider's circuit is open (deliveries skip it), else 0; as this processor "
    "last saw it",
    ("provider",),
    aggregation="max",
)
PROCESSOR_BREAKER_FAILURES = Metric(
    "mailstack_processor_breaker_consecutive_failures",
    Kind.GAUGE,
    "Consecutive failures a provider's breaker counts; as this processor last saw it",
    ("provider",),
    aggregation="max",
)
PROCESSOR_QUEUE_LAG = Metric(
    "mailstack_processor_queue_lag_seconds",
    Kind.GAUGE,
    "Age (since SQS SentTimestamp) of the oldest message of the last receive; 0 when it was empty",
    aggregation="max",
)
PROCESSOR_IN_FLIGHT = Metric(
    "mailstack_processor_in_flight", Kind.GAUGE, "Messages being handled now"
)
PROCESSOR_LAST_POLL = Metric(
    "mailstack_processor_last_poll_timestamp_seconds",
    Kind.GAUGE,
    "When the queue was last polled (Unix time)",
    aggregation="min",
)

# -- dispatcher (webhooks out) ----------------------------------------------------------------
DISPATCHER_DELIVERIES = Metric(
    "mailstack_dispatcher_deliveries_total",
    Kind.COUNTER,
    "Webhook delivery attempts by outcome: delivered (2xx), failed (another answer, or none), "
    "blocked (the URL or its address is not allowed)",
    ("outcome",),
)
DISPATCHER_DELIVERY_SECONDS = Metric(
    "mailstack_dispatcher_delivery_seconds",
    Kind.HISTOGRAM,
    "Latency of webhook delivery attempts, whatever their outcome",
    buckets=PROVIDER_BUCKETS,
)
DISPATCHER_EVENTS_GIVEN_UP = Metric(
    "mailstack_dispatcher_events_given_up_total",
    Kind.COUNTER,
    "Webhook events not delivered within WEBHOOK_MAX_EVENT_AGE_SECONDS: no more attempts",
)
DISPATCHER_ENDPOINTS_DISABLED = Metric(
    "mailstack_dispatcher_endpoints_disabled_total",
    Kind.COUNTER,
    "Webhook endpoints disabled after failing for WEBHOOK_DISABLE_AFTER_SECONDS",
)
DISPATCHER_BACKLOG = Metric(
    "mailstack_dispatcher_backlog",
    Kind.GAUGE,
    "Webhook events due now and not delivered (enabled endpoints), as of the last count",
    aggregation="max",
)
DISPATCHER_OLDEST_DUE_AGE = Metric(
    "mailstack_dispatcher_oldest_due_age_seconds",
    Kind.GAUGE,
    "How long the longest-waiting due webhook event has been due (0: none), as of the last count",
    aggregation="max",
)
DISPATCHER_IN_FLIGHT = Metric(
    "mailstack_dispatcher_in_flight", Kind.GAUGE, "Webhook deliveries under way now"
)
DISPATCHER_LAST_POLL = Metric(
    "mailstack_dispatcher_last_poll_timestamp_seconds",
    Kind.GAUGE,
    "When the dispatcher last looked for due webhook events (Unix time)",
    aggregation="min",
)

CATALOGUE: tuple[Metric, ...] = (
    GATEWAY_REQUEST_SECONDS,
    GATEWAY_EMAILS_ACCEPTED,
    GATEWAY_EMAILS_REJECTED,
    GATEWAY_AUTH_FAILURES,
    GATEWAY_RATE_LIMITED,
    GATEWAY_RATE_LIMIT_UNAVAILABLE,
    GATEWAY_EMAILS_REPUBLISHED,
    GATEWAY_OUTBOX_DEPTH,
    GATEWAY_OUTBOX_OLDEST_AGE,
    GATEWAY_PROVIDER_EVENTS,
    GATEWAY_PROVIDER_EVENTS_REFUSED,
    PROCESSOR_MESSAGES_RECEIVED,
    PROCESSOR_MESSAGES_POISON,
    PROCESSOR_DISPOSITIONS,
    PROCESSOR_MESSAGES_DROPPED,
    PROCESSOR_HANDLING_ERRORS,
    PROCESSOR_RETRIES,
    PROCESSOR_DEAD_LETTERS,
    PROCESSOR_SENDS,
    PROCESSOR_PROVIDER_SECONDS,
    PROCESSOR_FAILOVERS,
    PROCESSOR_BREAKER_OPEN,
    PROCESSOR_BREAKER_FAILURES,
    PROCESSOR_QUEUE_LAG,
    PROCESSOR_IN_FLIGHT,
    PROCESSOR_LAST_POLL,
    DISPATCHER_DELIVERIES,
    DISPATCHER_DELIVERY_SECONDS,
    DISPATCHER_EVENTS_GIVEN_UP,
    DISPATCHER_ENDPOINTS_DISABLED,
    DISPATCHER_BACKLOG,
    DISPATCHER_OLDEST_DUE_AGE,
    DISPATCHER_IN_FLIGHT,
    DISPATCHER_LAST_POLL,
)


def of_service(service: Service) -> tuple[Metric, ...]:
    return tuple(metric for metric in CATALOGUE if metric.service is service)
