"""Prometheus metrics of the dispatcher (named and explained in mailstack_core.metrics)."""

from mailstack_core import metrics
from mailstack_core.prometheus import counter, gauge, histogram

DELIVERIES = counter(metrics.DISPATCHER_DELIVERIES)
DELIVERY_SECONDS = histogram(metrics.DISPATCHER_DELIVERY_SECONDS)
EVENTS_GIVEN_UP = counter(metrics.DISPATCHER_EVENTS_GIVEN_UP)
ENDPOINTS_DISABLED = counter(metrics.DISPATCHER_ENDPOINTS_DISABLED)
BACKLOG = gauge(metrics.DISPATCHER_BACKLOG)
OLDEST_DUE_AGE = gauge(metrics.DISPATCHER_OLDEST_DUE_AGE)
IN_FLIGHT = gauge(metrics.DISPATCHER_IN_FLIGHT)
LAST_POLL = gauge(metrics.DISPATCHER_LAST_POLL)
