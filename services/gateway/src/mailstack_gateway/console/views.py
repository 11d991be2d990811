"""What the pages show, computed from rows: the sends chart, provider health and the timeline.
Pure functions, so the unit tests check them without a database or a browser."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mailstack_core.status import EmailStatus
from mailstack_gateway.console.queries import (
    WINDOW_MINUTES,
    Breaker,
    BreakerState,
    MinuteCount,
    window_start,
)

# The chart's drawing box (SVG user units): one slot per minute, bars with a gap between them.
CHART_WIDTH = 960
CHART_HEIGHT = 120
_SLOT = CHART_WIDTH / WINDOW_MINUTES
_BAR = _SLOT - 2


@dataclass(frozen=True)
class Bar:
    minute: datetime
    sent: int
    failed: int
    x: float
    sent_y: float
    sent_height: float
    failed_y: float
    failed_height: float


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    peak: int  # the tallest minute (sent + failed): the top of the scale
    sent: int
    failed: int
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    bar_width: float = _BAR


def sends_chart(counts: Iterable[MinuteCount], now: datetime) -> Chart:
    """A bar per minute of the last hour, oldest first, the failed attempts stacked on the
    sends; every minute has its bar, empty ones with zero height."""
    start = window_start(now)
    sent = [0] * WINDOW_MINUTES
    failed = [0] * WINDOW_MINUTES
    for count in counts:
        slot = int((count.minute - start).total_seconds() // 60)
        if 0 <= slot < WINDOW_MINUTES:
            sent[slot] += count.sent
            failed[slot] += count.failed
    peak = max(s + f for s, f in zip(sent, failed, strict=True))
    scale = CHART_HEIGHT / peak if peak else 0.0
    bars = []
    for slot in range(WINDOW_MINUTES):
        sent_height = sent[slot] * scale
        failed_height = failed[slot] * scale
        bars.append(
            Bar(
                minute=start + timedelta(minutes=slot),
                sent=sent[slot],
                failed=failed[slot],
                x=round(slot * _SLOT + 1, 2),
                sent_y=round(CHART_HEIGHT - sent_height, 2),
                sent_height=round(sent_height, 2),
                failed_y=round(CHART_HEIGHT - sent_height - failed_height, 2),
                failed_height=round(failed_height, 2),
            )
        )
    return Chart(bars=bars, peak=peak, sent=sum(sent), failed=sum(failed))


@dataclass(frozen=True)
class ProviderHealth:
    """A provider as the console shows it: its breaker (if it has a row) and the tenant's last
    hour with it."""

    provider: str
    state: BreakerState
    breaker: Breaker | None
    sent: int
    failed: int


def provider_health(
    breakers: Sequence[Breaker], counts: Iterable[MinuteCount], now: datetime
) -> list[ProviderHealth]:
    """Every provider with a breaker row or in the tenant's last hour, by name. A provider
    without a row has never failed since the breakers were created: closed."""
    sent: dict[str, int] = {}
    failed: dict[str, int] = {}
    for count in counts:
        if count.provider is not None:
            sent[count.provider] = sent.get(count.provider, 0) + count.sent
            failed[count.provider] = failed.get(count.provider, 0) + count.failed
    by_name = {breaker.provider: breaker for breaker in breakers}
    return [
        ProviderHealth(
            provider=name,
            state=by_name[name].state(now) if name in by_name else BreakerState.CLOSED,
            breaker=by_name.get(name),
            sent=sent.get(name, 0),
            failed=failed.get(name, 0),
        )
        for name in sorted(by_name.keys() | sent.keys())
    ]


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    status: str
    provider: str | None
    # The provider whose failure this row's provider took over from (a failover), if any.
    failover_from: str | None
    outcome: str | None
    details: list[tuple[str, str]]


# A new delivery starts with these: a provider that failed before them is no failover's cause.
_NEW_DELIVERY = {EmailStatus.QUEUED.value, EmailStatus.PROCESSING.value}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def timeline(rows: Iterable[Any]) -> list[TimelineEntry]:
    """History rows (status, provider, detail, at), oldest first, as timeline entries. Any
    status is shown as it is, including ones this code does not know (provider events)."""
    entries = []
    failed_provider: str | None = None
    for row in rows:
        detail: Mapping[str, Any] = row.detail or {}
        failover_from = None
        if row.provider and failed_provider and row.provider != failed_provider:
            failover_from = failed_provider
        if row.status in _NEW_DELIVERY:
            failed_provider = None
        elif row.provider:
            failed_provider = row.provider if row.status == EmailStatus.FAILED.value else None
        outcome = detail.get("outcome")
        entries.append(
            TimelineEntry(
                at=row.at,
                status=row.status,
                provider=row.provider,
                failover_from=failover_from,
                outcome=outcome if isinstance(outcome, str) else None,
                details=[
                    (key, _text(value))
                    for key, value in detail.items()
                    if key != "outcome" and value is not None
                ],
            )
        )
    return entries
