"""Prometheus metrics of the gateway (named and explained in mailstack_core.metrics)."""

from mailstack_core import metrics
from mailstack_core.prometheus import counter, gauge, histogram

EMAILS_ACCEPTED = counter(metrics.GATEWAY_EMAILS_ACCEPTED)
EMAILS_REJECTED = counter(metrics.GATEWAY_EMAILS_REJECTED)
REQUEST_SECONDS = histogram(metrics.GATEWAY_REQUEST_SECONDS)
AUTH_FAILURES = counter(metrics.GATEWAY_AUTH_FAILURES)
RATE_LIMITED = counter(metrics.GATEWAY_RATE_LIMITED)
RATE_LIMIT_UNAVAILABLE = counter(metrics.GATEWAY_RATE_LIMIT_UNAVAILABLE)
EMAILS_REPUBLISHED = counter(metrics.GATEWAY_EMAILS_REPUBLISHED)
OUTBOX_DEPTH = gauge(metrics.GATEWAY_OUTBOX_DEPTH)
OUTBOX_OLDEST_AGE = gauge(metrics.GATEWAY_OUTBOX_OLDEST_AGE)
PROVIDER_EVENTS = counter(metrics.GATEWAY_PROVIDER_EVENTS)
PROVIDER_EVENTS_REFUSED = counter(metrics.GATEWAY_PROVIDER_EVENTS_REFUSED)
