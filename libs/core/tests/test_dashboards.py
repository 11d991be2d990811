"""The metric catalogue, and what is generated from it: the Grafana dashboard and the table of
docs/operations.md, both committed and both in step with the catalogue."""

import json
import re
from pathlib import Path

from mailstack_core import dashboards, metrics


def test_the_committed_grafana_dashboard_is_the_one_the_catalogue_gives(repo_root: Path) -> None:
    committed = (repo_root / "dashboards" / "grafana" / "mailstack.json").read_text()
    assert committed == dashboards.dashboard_json(), "run `make dashboards`"


def test_the_operations_guide_lists_exactly_the_catalogued_metrics(repo_root: Path) -> None:
    guide = (repo_root / "docs" / "operations.md").read_text()
    assert dashboards.metrics_table() in guide, "run `make dashboards`"
    listed = re.findall(r"^\| `(mailstack_[a-z_]+)` \|", guide, re.MULTILINE)
    assert listed == [metric.name for metric in metrics.CATALOGUE]


def test_every_metric_has_a_panel_that_queries_it() -> None:
    panels = [p for p in dashboards.grafana_dashboard()["panels"] if p["type"] != "row"]
    assert [panel["title"] for panel in panels] == [m.name for m in metrics.CATALOGUE]
    for panel, metric in zip(panels, metrics.CATALOGUE, strict=True):
        assert all(metric.name in target["expr"] for target in panel["targets"]), metric.name
    ids = [panel["id"] for panel in dashboards.grafana_dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_histograms_are_drawn_as_quantiles_and_counters_as_rates() -> None:
    latency = dashboards.queries(metrics.PROCESSOR_PROVIDER_SECONDS)
    assert [legend for _, legend in latency] == [
        "p50 {{provider}}",
        "p95 {{provider}}",
        "p99 {{provider}}",
    ]
    assert latency[1][0] == (
        "histogram_quantile(0.95, sum by (le, provider) "
        "(rate(mailstack_processor_provider_seconds_bucket[$__rate_interval])))"
    )
    assert dashboards.queries(metrics.PROCESSOR_FAILOVERS) == [
        (
            "sum by (from_provider, to_provider) "
            "(rate(mailstack_processor_failovers_total[$__rate_interval]))",
            "{{from_provider}} {{to_provider}}",
        )
    ]
    assert dashboards.queries(metrics.GATEWAY_OUTBOX_DEPTH) == [
        ("max (mailstack_gateway_outbox_depth)", "{{instance}}")
    ]


def test_names_follow_the_prometheus_conventions() -> None:
    names = [metric.name for metric in metrics.CATALOGUE]
    assert len(names) == len(set(names))
    for metric in metrics.CATALOGUE:
        assert re.fullmatch(
            r"mailstack_(gateway|processor|dispatcher)_[a-z][a-z_]*[a-z]", metric.name
        )
        assert metric.name.endswith("_total") == (metric.kind is metrics.Kind.COUNTER), metric.name
        if metric.kind is metrics.Kind.HISTOGRAM:
            assert metric.name.endswith("_seconds"), metric.name
        assert metric.help, metric.name
        assert not metric.help.endswith("."), metric.name
        assert set(metric.dashboard_labels) <= set(metric.labels), metric.name


def test_the_dashboard_is_plain_json_grafana_can_import() -> None:
    document = json.loads(dashboards.dashboard_json())
    assert document["uid"] == "mailstack"
    assert document["templating"]["list"][0]["query"] == "prometheus"
