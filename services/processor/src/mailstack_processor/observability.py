"""Prometheus metrics of the processor (named and explained in mailstack_core.metrics)."""

from mailstack_core import metrics
from mailstack_core.prometheus import counter, gauge, histogram

MESSAGES_RECEIVED = counter(metrics.PROCESSOR_MESSAGES_RECEIVED)
MESSAGES_POISON = counter(metrics.PROCESSOR_MESSAGES_POISON)
DISPOSITIONS = counter(metrics.PROCESSOR_DISPOSITIONS)
MESSAGES_DROPPED = counter(metrics.PROCESSOR_MESSAGES_DROPPED)
HANDLING_ERRORS = counter(metrics.PROCESSOR_HANDLING_ERRORS)
RETRIES = counter(metrics.PROCESSOR_RETRIES)
DEAD_LETTERS = counter(metrics.PROCESSOR_DEAD_LETTERS)
SENDS = counter(metrics.PROCESSOR_SENDS)
PROVIDER_SECONDS = histogram(metrics.PROCESSOR_PROVIDER_SECONDS)
FAILOVERS = counter(metrics.PROCESSOR_FAILOVERS)
BREAKER_OPEN = gauge(metrics.PROCESSOR_BREAKER_OPEN)
BREAKER_FAILURES = gauge(metrics.PROCESSOR_BREAKER_FAILURES)
QUEUE_LAG = gauge(metrics.PROCESSOR_QUEUE_LAG)
IN_FLIGHT = gauge(metrics.PROCESSOR_IN_FLIGHT)
LAST_POLL = gauge(metrics.PROCESSOR_LAST_POLL)
