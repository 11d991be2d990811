"""What the console's pages compute from rows: the chart, provider health, the timeline."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from mailstack_gateway.console.queries import Breaker, BreakerState, MinuteCount
from mailstack_gateway.console.views import (
    CHART_HEIGHT,
    provider_health,
    sends_chart,
    timeline,
)

NOW = datetime(2026, 12, 2, 10, 30, 20, tzinfo=UTC)
CURRENT = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)


def test_the_chart_has_a_bar_per_minute_of_the_last_hour_scaled_to_the_busiest() -> None:
    counts = [
        MinuteCount(CURRENT, "elasticemail", 3, 1),
        MinuteCount(CURRENT, "sendgrid", 1, 0),
        MinuteCount(CURRENT - timedelta(minutes=59), "sendgrid", 2, 0),
        MinuteCount(CURRENT - timedelta(minutes=60), "sendgrid", 9, 0),  # before the window
    ]

    chart = sends_chart(counts, NOW)

    assert len(chart.bars) == 60
    assert chart.bars[0].minute == CURRENT - timedelta(minutes=59)
    assert chart.bars[-1].minute == CURRENT
    assert (chart.sent, chart.failed, chart.peak) == (6, 1, 5)
    last = chart.bars[-1]
    assert (last.sent, last.failed) == (4, 1)
    assert last.sent_height == CHART_HEIGHT * 4 / 5
    assert last.failed_y + last.failed_height == last.sent_y  # stacked on the sends
    assert last.failed_y == 0  # the busiest minute fills the height
    assert chart.bars[0].sent_height == CHART_HEIGHT * 2 / 5
    assert all(bar.sent_height == 0 for bar in chart.bars[1:-1])
    xs = [bar.x for bar in chart.bars]
    assert xs == sorted(xs)
    assert xs[-1] + chart.bar_width <= chart.width


def test_an_empty_hour_draws_flat_bars() -> None:
    chart = sends_chart([], NOW)
    assert (chart.sent, chart.failed, chart.peak) == (0, 0, 0)
    assert {bar.sent_height for bar in chart.bars} == {0}


def _breaker(provider: str, failures: int, opened_for: float | None) -> Breaker:
    opened_until = None if opened_for is None else NOW + timedelta(seconds=opened_for)
    return Breaker(provider, failures, opened_until, None, NOW)


def test_a_breakers_state_follows_what_the_processors_wrote() -> None:
    assert _breaker("a", 0, None).state(NOW) is BreakerState.CLOSED
    assert _breaker("a", 2, None).state(NOW) is BreakerState.FAILING
    assert _breaker("a", 3, 30).state(NOW) is BreakerState.OPEN
    assert _breaker("a", 3, -1).state(NOW) is BreakerState.HALF_OPEN


def test_provider_health_joins_breakers_with_the_tenants_last_hour() -> None:
    breakers = [_breaker("elasticemail", 3, 30)]
    counts = [
        MinuteCount(CURRENT, "elasticemail", 0, 2),
        MinuteCount(CURRENT, "sendgrid", 4, 0),
        MinuteCount(CURRENT - timedelta(minutes=1), "sendgrid", 1, 1),
        MinuteCount(CURRENT, None, 0, 1),  # a final FAILED names no provider
    ]

    health = provider_health(breakers, counts, NOW)

    assert [(h.provider, h.state, h.sent, h.failed) for h in health] == [
        ("elasticemail", BreakerState.OPEN, 0, 2),
        ("sendgrid", BreakerState.CLOSED, 5, 1),
    ]
    assert health[0].breaker is breakers[0]
    assert health[1].breaker is None


def _rows(*steps: tuple[str, str | None, dict[str, Any] | None]) -> list[Any]:
    return [
        SimpleNamespace(status=s, provider=p, detail=d, at=NOW + timedelta(seconds=n))
        for n, (s, p, d) in enumerate(steps)
    ]


def test_the_timeline_marks_a_provider_taking_over_from_one_that_failed() -> None:
    entries = timeline(
        _rows(
            ("QUEUED", None, {"outcome": "accepted"}),
            ("PROCESSING", None, {}),
            ("FAILED", "elasticemail", {"outcome": "failed", "reason": "HTTP 503"}),
            ("SENT", "sendgrid", {"outcome": "sent", "attempt": 2, "transaction_id": None}),
        )
    )

    assert [(e.status, e.provider, e.failover_from) for e in entries] == [
        ("QUEUED", None, None),
        ("PROCESSING", None, None),
        ("FAILED", "elasticemail", None),
        ("SENT", "sendgrid", "elasticemail"),
    ]
    assert entries[0].outcome == "accepted"
    assert entries[2].details == [("reason", "HTTP 503")]
    assert entries[3].details == [("attempt", "2")]
    assert [e.at for e in entries] == sorted(e.at for e in entries)


def test_a_retry_starts_afresh_and_later_events_are_shown_as_they_are() -> None:
    entries = timeline(
        _rows(
            ("PROCESSING", None, {}),
            ("FAILED", "elasticemail", {"outcome": "failed"}),
            ("FAILED", "sendgrid", {"outcome": "failed"}),
            ("QUEUED", None, {"outcome": "retry_scheduled"}),
            ("PROCESSING", None, None),
            ("SENT", "elasticemail", {}),
            ("DELIVERED", "elasticemail", {"event": "delivered"}),
            ("BOUNCED", "elasticemail", {"outcome": 5}),
        )
    )

    assert [e.failover_from for e in entries] == [
        None,
        None,
        "elasticemail",  # sendgrid took over within the first delivery
        None,
        None,
        None,  # the retry's first provider is no failover
        None,
        None,
    ]
    assert [e.status for e in entries[-2:]] == ["DELIVERED", "BOUNCED"]
    assert entries[-2].details == [("event", "delivered")]
    assert entries[-1].outcome is None  # not a word: not shown as one
    assert entries[4].details == []
