"""Prometheus metrics of the gateway."""

from prometheus_client import Counter, Histogram

EMAILS_ACCEPTED = Counter("mailstack_gateway_emails_accepted_total", "Emails accepted with 202")
EMAILS_REJECTED = Counter(
    "mailstack_gateway_emails_rejected_total", "Emails refused, by reason", ["reason"]
)
REQUEST_SECONDS = Histogram(
    "mailstack_gateway_request_seconds", "HTTP request latency", ["method", "route", "status"]
)
