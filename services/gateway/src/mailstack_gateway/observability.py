"""Prometheus metrics of the gateway."""

from prometheus_client import Counter, Histogram

EMAILS_ACCEPTED = Counter("mailstack_gateway_emails_accepted_total", "Emails accepted with 202")
EMAILS_REJECTED = Counter(
    "mailstack_gateway_emails_rejected_total", "Emails refused, by reason", ["reason"]
)
REQUEST_SECONDS = Histogram(
    "mailstack_gateway_request_seconds", "HTTP request latency", ["method", "route", "status"]
)
AUTH_FAILURES = Counter(
    "mailstack_gateway_auth_failures_total",
    "Requests refused for missing or invalid credentials, by credential kind and reason",
    ["kind", "reason"],
)
RATE_LIMITED = Counter(
    "mailstack_gateway_rate_limited_total", "Requests answered 429, by limit", ["limit"]
)
RATE_LIMIT_UNAVAILABLE = Counter(
    "mailstack_gateway_rate_limit_unavailable_total",
    "Requests let through without a rate-limit check because Redis was unreachable (fail open)",
)
EMAILS_REPUBLISHED = Counter(
    "mailstack_gateway_emails_republished_total",
    "Stranded emails (no sign of life past STRANDED_AFTER_SECONDS) put back in the outbox",
)
