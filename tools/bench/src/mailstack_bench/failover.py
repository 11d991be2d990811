"""Failover for `make bench`: delivery latency with the primary hanging, once its breaker is
open, against a run with the secondary alone.

Each run restarts the processor with its own settings, sends a warm-up (which, with the primary
hanging, opens its breaker: three 3-second timeouts), then a steady load paced by wrk. Latency
is an email's SENT history row minus its `created_at`, for the emails of the steady load; the
result is the ratio of the two p95s.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime

import psycopg

from mailstack_bench import wrk
from mailstack_stack import postgres
from mailstack_stack.stack import PROCESSOR, RunningStack
from mailstack_stubs.control import StubControl
from mailstack_testing.waiting import eventually

# The load: this many emails a second (well below the processor's capacity, so the latencies
# are failover's, not queueing's). The warm-up lasts long enough for three sends to time out.
RATE_PER_SECOND = 20
MIN_WARM_UP_SECONDS = 4.0
CONNECTIONS = 4
# A steady load that left no email (a loaded machine's wrk got no request through in a short
# run) is sent again, at most this many times, before the run fails saying what wrk saw.
STEADY_ATTEMPTS = 3

_LATENCIES = """
    SELECT extract(epoch FROM min(h.at) - e.created_at)
    FROM emails e JOIN email_history h ON h.email_id = e.id AND h.status = 'SENT'
    WHERE e.created_at >= %s
    GROUP BY e.id, e.created_at
"""
_UNSENT = """
    SELECT count(*) FROM emails e
    WHERE e.created_at >= %s
      AND NOT EXISTS (SELECT 1 FROM email_history h WHERE h.email_id = e.id AND h.status = 'SENT')
"""


def _now(database_url: str) -> datetime:
    with psycopg.connect(postgres.libpq_url(database_url)) as connection:
        row = connection.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


def _scalars(database_url: str, query: str, since: datetime) -> list[float]:
    with psycopg.connect(postgres.libpq_url(database_url)) as connection:
        return [float(row[0]) for row in connection.execute(query, (since,))]


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def _restart_processor(stack: RunningStack, env: Mapping[str, str]) -> None:
    """The processor again, with `env` over its settings (a changed definition restarts it)."""
    launcher = stack.stack
    extra = dict(launcher.config.extra_env) | {PROCESSOR: dict(env)}
    launcher.config = dataclasses.replace(launcher.config, extra_env=extra)
    stack.start_component(PROCESSOR)


def _send(stack: RunningStack, body: str, seconds: float) -> tuple[datetime, wrk.WrkResult]:
    """POSTs paced to RATE_PER_SECOND for `seconds`; when they started (database clock), and
    what wrk saw."""
    since = _now(stack.database_url)
    result = wrk.run(
        f"{stack.gateway_url}/v1/emails",
        seconds=seconds,
        connections=CONNECTIONS,
        threads=1,
        method="POST",
        body=body,
        api_key=stack.api_key,
        pace_ms=1000 * CONNECTIONS / RATE_PER_SECOND,
    )
    return since, result


def _wait_until_sent(database_url: str, since: datetime, what: str) -> None:
    eventually(
        lambda: _scalars(database_url, _UNSENT, since) == [0.0],
        120,
        interval=0.5,
        what=f"the {what}'s emails SENT",
    )


def _sent_latencies(stack: RunningStack, body: str, seconds: float, what: str) -> list[float]:
    """Send `seconds` of load and wait until all of it is SENT; the latencies (s) of its
    emails. Sent again if it left no email, at most STEADY_ATTEMPTS times."""
    for _ in range(STEADY_ATTEMPTS):
        since, result = _send(stack, body, seconds)
        _wait_until_sent(stack.database_url, since, what)
        if latencies := _scalars(stack.database_url, _LATENCIES, since):
            return latencies
    raise RuntimeError(f"the {what} left no email in {STEADY_ATTEMPTS} tries; wrk: {result}")


def _run(
    stack: RunningStack, body: str, seconds: float, env: Mapping[str, str], hang: bool
) -> float:
    """p95 delivery latency (ms) of `seconds` of steady load under `env`, the primary hanging
    or not."""
    primary = StubControl(stack.elasticemail_stub_url)
    try:
        _restart_processor(stack, env)
        if hang:
            primary.set_behaviour("hang")
        _sent_latencies(stack, body, max(MIN_WARM_UP_SECONDS, seconds), "warm-up")
        return 1000 * p95(_sent_latencies(stack, body, seconds, "steady load"))
    finally:
        primary.reset()


def measure_failover(
    stack: RunningStack, email: Mapping[str, object], seconds: float
) -> dict[str, float]:
    """p95 with the secondary alone, p95 with the primary hanging, and their ratio."""
    body = json.dumps(email)
    alone = _run(stack, body, seconds, {"PROVIDER_ORDER": "sendgrid"}, hang=False)
    hanging = _run(stack, body, seconds, {}, hang=True)
    return {
        "secondary_alone_p95_ms": alone,
        "primary_hanging_p95_ms": hanging,
        "failover_p95_vs_secondary_alone": hanging / alone,
    }
