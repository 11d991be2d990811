"""Prometheus collectors built from the catalogue in mailstack_core.metrics."""

from prometheus_client import Counter, Gauge, Histogram

from mailstack_core.metrics import Kind, Metric


def _checked(metric: Metric, kind: Kind) -> Metric:
    if metric.kind is not kind:
        raise TypeError(f"{metric.name} is a {metric.kind}, not a {kind}")
    return metric


def counter(metric: Metric) -> Counter:
    _checked(metric, Kind.COUNTER)
    return Counter(metric.name, metric.help, metric.labels)


def gauge(metric: Metric) -> Gauge:
    _checked(metric, Kind.GAUGE)
    return Gauge(metric.name, metric.help, metric.labels)


def histogram(metric: Metric) -> Histogram:
    _checked(metric, Kind.HISTOGRAM)
    if metric.buckets is None:
        return Histogram(metric.name, metric.help, metric.labels)
    return Histogram(metric.name, metric.help, metric.labels, buckets=metric.buckets)
