"""`make bench`: the gateway's and the processor's speed and memory, as ratios to baselines
measured in the same run on the same machine (load from wrk, over loopback).

- intake: durable `POST /v1/emails` (with an API key) against a bare FastAPI app parsing the
  same body (`bench_app`, same venv, one uvicorn process); p99 at half the maximum rate, once
  the outbox the maximum-rate load left is published; gateway CPU per accepted email;
- delivery: the processor draining the backlog that intake left (processor stopped during
  intake) against a baseline consumer doing only LocalStack receive + delete-batch;
  processor CPU per delivered email;
- stop: seconds from SIGTERM to exit for an idle processor in its long poll (3 s);
- failover: delivery p95 with the primary hanging, once its breaker is open, against a run with
  the secondary alone (`failover.py`);
- memory: each service's resident set after the load;
- CPU by process (`accounting`): what every process of the stack spent per accepted email, per
  email sent and per baseline message, since they share the machine's cores; with `--profile`,
  whose code the gateway (intake) and the processor (drain) ran, from py-spy.

Ratios travel between machines; absolute numbers are printed for context. Targets come from
the speed issue; each row says whether it is met.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from mailstack_bench import wrk
from mailstack_bench.accounting import CpuLedger, per_item_ms, self_time_by_package, spent
from mailstack_bench.failover import measure_failover
from mailstack_core.status import DELIVERY_ORDER, EmailStatus
from mailstack_stack import postgres
from mailstack_stack.config import LOCALHOST, Ports, StackConfig, find_repo_root, free_port
from mailstack_stack.stack import (
    COMPONENTS,
    ELASTICEMAIL_STUB,
    GATEWAY,
    PROCESSOR,
    SENDGRID_STUB,
    RunningStack,
    run_stack,
)
from mailstack_testing.aws import localstack_clients
from mailstack_testing.databases import drop_database
from mailstack_testing.waiting import eventually

# A sent email, whether or not a provider's event has moved it on since.
SENT_OR_LATER = (EmailStatus.SENT.value, *(status.value for status in DELIVERY_ORDER))

EMAIL = {
    "from": {"email": "bench@example.com", "name": "Bench"},
    "to": [{"email": "user@example.com"}],
    "subject": "bench",
    "text": "benchmark message",
}
BODY = json.dumps(EMAIL)
# No provider events from the stubs: posting and taking them in is the stubs' and the gateway's
# work, on the cores the processor's drain is measured on (real providers post them from
# elsewhere, to gateway tasks).
NO_STUB_EVENTS = {stub: {"STUB_EVENTS_URL": ""} for stub in (ELASTICEMAIL_STUB, SENDGRID_STUB)}

# name: (what, target, how the measured value compares)
TARGETS: dict[str, tuple[str, float, str]] = {
    "intake_vs_bare_post": ("intake throughput / bare FastAPI POST", 0.5, ">="),
    "intake_p99_ms_at_half_rate": ("intake p99 (ms) at half the maximum rate", 50.0, "<="),
    "drain_vs_baseline_consumer": ("processor drain / baseline SQS consumer", 0.5, ">="),
    "processor_cpu_ms_per_email": ("processor CPU (ms) per delivered email", 2.0, "<="),
    "processor_stop_seconds": ("processor SIGTERM to exit mid long-poll (s)", 5.0, "<="),
    "failover_p95_vs_secondary_alone": (
        "failover p95, primary hanging / secondary alone",
        1.2,
        "<=",
    ),
    "gateway_rss_mb": ("gateway RSS (MB) after load", 150.0, "<="),
    "processor_rss_mb": ("processor RSS (MB) after load", 150.0, "<="),
}


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _ledger(stack: RunningStack) -> CpuLedger:
    """The stack's processes as they run now (a restarted component is another process)."""
    pids = {name: stack.pid(name) for name in COMPONENTS}
    return CpuLedger({name: pid for name, pid in pids.items() if pid is not None})


def _rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


@contextmanager
def bare_app(python: str) -> Iterator[tuple[str, int]]:
    """The baseline FastAPI app in a uvicorn process of its own; yields its URL and pid."""
    port = free_port()
    process = subprocess.Popen(
        [
            python,
            "-m",
            "uvicorn",
            "mailstack_bench.bench_app:app",
            "--port",
            str(port),
            "--host",
            LOCALHOST,
            "--log-level",
            "warning",
            "--no-access-log",
        ],
    )
    url = f"http://{LOCALHOST}:{port}"
    try:
        eventually(
            lambda: httpx.get(f"{url}/hello", timeout=1).status_code == 200,
            30,
            interval=0.2,
            ignoring=(httpx.HTTPError,),
            what="the bare FastAPI app to answer",
        )
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def _count_rows(database_url: str, query: str, params: tuple[object, ...] = ()) -> int:
    with psycopg.connect(postgres.libpq_url(database_url)) as connection:
        row = connection.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def _count(database_url: str, *statuses: str) -> int:
    if not statuses:
        return _count_rows(database_url, "SELECT count(*) FROM emails")
    query = "SELECT count(*) FROM emails WHERE status = ANY(%s)"
    return _count_rows(database_url, query, (list(statuses),))


# The gateway's own latency histogram (its middleware times each request from the moment
# the app is called until the response is sent, the database and Redis included): what a
# request spent inside the app, as against what wrk measures (that, plus uvicorn's parsing,
# the event loop's queue and waiting for a core).
_REQUEST_SECONDS = "mailstack_gateway_request_seconds"


def _accepts_by_bucket(gateway_url: str, api_key: str) -> dict[float, float]:
    """Cumulative count of answered `POST /v1/emails` (202) per histogram bucket bound."""
    scraped = httpx.get(
        f"{gateway_url}/metrics", headers={"Authorization": f"Bearer {api_key}"}, timeout=10
    )
    scraped.raise_for_status()
    counts: dict[float, float] = {}
    for family in text_string_to_metric_families(scraped.text):
        if family.name != _REQUEST_SECONDS:
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name == f"{_REQUEST_SECONDS}_bucket" and (
                labels["method"],
                labels["route"],
                labels["status"],
            ) == ("POST", "/v1/emails", "202"):
                counts[float(labels["le"])] = sample.value
    return counts


def _counted_over(
    before: dict[float, float], after: dict[float, float], bound: float
) -> tuple[int, int]:
    """Of the requests counted between two scrapes: how many, and how many took longer than
    `bound` (a bucket's bound)."""
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    within = after.get(bound, 0.0) - before.get(bound, 0.0)
    return round(total), round(total - within)


def _outbox_rows(database_url: str) -> int:
    """Accepted emails the gateway has not published to the queue yet."""
    return _count_rows(database_url, "SELECT count(*) FROM email_outbox")


def _baseline_consumer(endpoint: str, messages: int) -> float:
    """Messages per second for receive(10) + delete_message_batch alone, on a queue of its own."""
    sqs, _ = localstack_clients(endpoint)
    queue_url = sqs.create_queue(QueueName=f"bench-baseline-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    try:
        for start in range(0, messages, 10):
            sqs.send_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(n), "MessageBody": json.dumps({"email_id": str(uuid.uuid4())})}
                    for n in range(start, min(start + 10, messages))
                ],
            )
        consumed = 0
        started = time.perf_counter()
        while consumed < messages:
            batch = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            if batch:
                sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                        for n, m in enumerate(batch)
                    ],
                )
                consumed += len(batch)
        return messages / (time.perf_counter() - started)
    finally:
        sqs.delete_queue(QueueUrl=queue_url)


def _timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


@contextmanager
def profiled(pid: int, output: Path | None, seconds: float) -> Iterator[None]:
    """py-spy samples `pid` for `seconds` while the block runs (when `output` is given):
    collapsed stacks (`--format raw`), for flame graphs or `self_time_by_package`."""
    if output is None:
        yield
        return
    recorder = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=output.with_suffix(".log").open("w"),
    )
    try:
        yield
    finally:
        recorder.wait(timeout=seconds + 30)


def measure(
    stack: RunningStack,
    python: str,
    seconds: float,
    connections: int,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    def load(url: str, post: bool = False, pace_ms: float = 0.0) -> wrk.WrkResult:
        return wrk.run(
            url,
            # A paced run lasts at least five of its intervals, so a slow machine still gets
            # answers to measure (a 1 s run paced at 4 s per request would measure nothing).
            seconds=max(seconds, 5 * pace_ms / 1000),
            connections=connections,
            method="POST" if post else "GET",
            body=BODY if post else "",
            api_key=stack.api_key,
            pace_ms=pace_ms,
        )

    with bare_app(python) as (bare, bare_pid):
        bare_get = load(f"{bare}/hello")
        bare_cpu = _cpu_seconds(bare_pid)
        bare_post = load(f"{bare}/emails", post=True)
        bare_cpu_ms = (_cpu_seconds(bare_pid) - bare_cpu) * 1000 / max(1, bare_post.requests)

    gateway = stack.pid(GATEWAY)
    assert gateway is not None
    healthz = load(f"{stack.gateway_url}/healthz")

    # Intake with the processor stopped: the gateway alone, and a backlog for the drain.
    stack.stop_component(PROCESSOR)
    ledger = _ledger(stack)
    before = ledger.snapshot()
    gateway_profile = profile_dir / "gateway-intake.txt" if profile_dir else None
    with profiled(gateway, gateway_profile, seconds):
        intake = load(f"{stack.gateway_url}/v1/emails", post=True)
    intake_cpu = per_item_ms(spent(before, ledger.snapshot()), intake.requests)
    # At the maximum rate the gateway accepts faster than it publishes (its inline publisher
    # gets a share of the one event loop); the outbox holds the rest until it catches up, a
    # few seconds of the gateway's and LocalStack's CPU. The half-rate latency is the steady
    # state's, so it is measured once that backlog is published; both are reported.
    outbox_after_intake = _outbox_rows(stack.database_url)
    outbox_catch_up = _timed(
        lambda: eventually(
            lambda: _outbox_rows(stack.database_url),
            120,
            interval=0.1,
            until=lambda rows: rows == 0,
            what="the outbox published after the maximum-rate load",
        )
    )
    # Half the maximum rate: each connection waits so that together they send rate/2.
    pace_ms = 1000 * connections / max(1.0, intake.per_second / 2)
    histogram_before = _accepts_by_bucket(stack.gateway_url, stack.api_key)
    half = load(f"{stack.gateway_url}/v1/emails", post=True, pace_ms=pace_ms)
    handled, handled_over_50ms = _counted_over(
        histogram_before, _accepts_by_bucket(stack.gateway_url, stack.api_key), 0.05
    )
    gateway_rss = _rss_mb(gateway)

    backlog = _count(stack.database_url, "QUEUED")
    stack.start_component(PROCESSOR)
    processor = stack.pid(PROCESSOR)
    assert processor is not None
    ledger = _ledger(stack)
    before = ledger.snapshot()
    processor_profile = profile_dir / "processor-drain.txt" if profile_dir else None
    with profiled(processor, processor_profile, seconds):
        drain_seconds = _timed(
            lambda: eventually(
                # SENT, or moved on by the stubs' events (DELIVERED, ...).
                lambda: _count(stack.database_url, *SENT_OR_LATER),
                600,
                interval=0.5,
                until=lambda sent: sent >= backlog,
                what=f"all {backlog} queued emails SENT",
            )
        )
    drain_cpu = per_item_ms(spent(before, ledger.snapshot()), backlog)
    processor_rss = _rss_mb(processor)
    before = ledger.snapshot()
    baseline_messages = min(backlog, 2000)
    baseline_rate = _baseline_consumer(stack.aws_endpoint_url, baseline_messages)
    baseline_cpu = per_item_ms(spent(before, ledger.snapshot()), baseline_messages)

    # Stop mid long-poll: the queue is empty now, so the processor sits in its receive call.
    stop_seconds = _stop_seconds(processor)
    failover = measure_failover(stack, EMAIL, seconds)

    measured = {
        "intake_vs_bare_post": intake.per_second / bare_post.per_second,
        "intake_p99_ms_at_half_rate": half.p99_ms,
        "drain_vs_baseline_consumer": (backlog / drain_seconds) / baseline_rate,
        "processor_cpu_ms_per_email": drain_cpu.get(PROCESSOR, 0.0),
        "processor_stop_seconds": stop_seconds,
        "failover_p95_vs_secondary_alone": failover["failover_p95_vs_secondary_alone"],
        "gateway_rss_mb": gateway_rss,
        "processor_rss_mb": processor_rss,
    }
    return {
        "load": {"seconds": seconds, "connections": connections},
        "targets": {
            name: {
                "what": what,
                "target": f"{op} {target}",
                "measured": round(measured[name], 3),
                "met": measured[name] >= target if op == ">=" else measured[name] <= target,
            }
            for name, (what, target, op) in TARGETS.items()
        },
        "absolute": {
            "bare_get": asdict(bare_get) | {"per_second": bare_get.per_second},
            "bare_post": asdict(bare_post) | {"per_second": bare_post.per_second},
            "gateway_healthz": asdict(healthz) | {"per_second": healthz.per_second},
            "gateway_post": asdict(intake) | {"per_second": intake.per_second},
            "gateway_post_half_rate": asdict(half) | {"per_second": half.per_second},
            "outbox_after_intake": outbox_after_intake,
            "outbox_catch_up_seconds": outbox_catch_up,
            # What the gateway's own histogram counted during the half-rate load.
            "half_rate_accepts_in_gateway": handled,
            "half_rate_accepts_over_50ms_in_gateway": handled_over_50ms,
            "gateway_cpu_ms_per_accept": intake_cpu.get(GATEWAY, 0.0),
            "bare_app_cpu_ms_per_post": bare_cpu_ms,
            "backlog": backlog,
            "drain_per_second": backlog / drain_seconds,
            "baseline_consumer_per_second": baseline_rate,
            "secondary_alone_p95_ms": failover["secondary_alone_p95_ms"],
            "primary_hanging_p95_ms": failover["primary_hanging_p95_ms"],
        },
        # CPU milliseconds each process of the machine's stack spent per item, during the
        # intake (per accepted email), the drain (per email sent) and the baseline consumer
        # (per message): on shared cores, what bounds each rate.
        "cpu_ms": {"intake": intake_cpu, "drain": drain_cpu, "baseline_consumer": baseline_cpu},
    }


def _stop_seconds(pid: int) -> float:
    process = psutil.Process(pid)
    started = time.perf_counter()
    os.kill(pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except psutil.TimeoutExpired:
        process.kill()
        return 60.0
    return time.perf_counter() - started


# The phases whose CPU the table breaks down by process, and how each is named there.
CPU_PHASES = {
    "intake": "per accepted email (intake)",
    "drain": "per email sent (drain)",
    "baseline_consumer": "per message (baseline consumer)",
}


def render(result: dict[str, Any]) -> str:
    lines = [f"{'measure':<48} {'target':>10} {'measured':>10}  met", "-" * 76]
    for row in result["targets"].values():
        met = "yes" if row["met"] else "NO"
        lines.append(f"{row['what']:<48} {row['target']:>10} {row['measured']:>10}  {met}")
    absolute = result["absolute"]
    lines.append("")

    def load_line(name: str) -> str:
        row = absolute[name]
        return (
            f"{name:<24} {row['per_second']:>9.0f} req/s  p50 {row['p50_ms']:.1f} ms  "
            f"p99 {row['p99_ms']:.1f} ms  statuses {row['statuses']}"
        )

    lines.extend(
        load_line(name) for name in ("bare_get", "bare_post", "gateway_healthz", "gateway_post")
    )
    lines.append(
        f"outbox after the maximum-rate load: {absolute['outbox_after_intake']} emails, "
        f"published within {absolute['outbox_catch_up_seconds']:.1f} s"
    )
    lines.append(load_line("gateway_post_half_rate"))
    handled = absolute["half_rate_accepts_in_gateway"]
    over = absolute["half_rate_accepts_over_50ms_in_gateway"]
    lines.append(
        f"  the gateway's own latency histogram: {over} of {handled} accepts "
        f"({over / max(1, handled):.2%}) took over 50 ms inside the app (the rest of wrk's "
        "time is uvicorn's, the event loop's queue and waiting for a core)"
    )
    lines.append(
        f"drain {absolute['drain_per_second']:.0f}/s of a {absolute['backlog']} backlog; "
        f"baseline consumer {absolute['baseline_consumer_per_second']:.0f}/s"
    )
    lines.append(
        f"delivery p95: secondary alone {absolute['secondary_alone_p95_ms']:.0f} ms, "
        f"primary hanging {absolute['primary_hanging_p95_ms']:.0f} ms"
    )
    lines.append("")
    lines.append(f"bare FastAPI app: {absolute['bare_app_cpu_ms_per_post']:.2f} ms CPU per POST")
    for phase, what in CPU_PHASES.items():
        shares = result["cpu_ms"][phase]
        parts = ", ".join(
            f"{role} {ms:.2f}" for role, ms in shares.items() if role != "total" and ms >= 0.005
        )
        lines.append(f"{what}: {shares['total']:.2f} ms CPU ({parts})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--output", type=Path, help="also write the result as JSON here")
    parser.add_argument(
        "--profile", type=Path, help="write py-spy profiles of the gateway and processor here"
    )
    args = parser.parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    wrk.ensure_wrk()

    repo_root = find_repo_root()
    database = f"mailstack_bench_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="mailstack-bench-") as state_dir:
        config = StackConfig(
            repo_root=repo_root,
            state_dir=Path(state_dir),
            ports=Ports.free(),
            database_name=database,
            name_prefix=f"bench-{uuid.uuid4().hex[:8]}-",
            die_with_parent=True,
            extra_env={
                # The load is one key's: measure the gateway, not its rate limit.
                "gateway": {
                    "RATE_LIMIT_SEND_PER_MINUTE": "100000000",
                    "RATE_LIMIT_READ_PER_MINUTE": "100000000",
                },
                **NO_STUB_EVENTS,
            },
        )
        try:
            with run_stack(config) as stack:
                result = measure(stack, config.python, args.seconds, args.connections, args.profile)
        finally:
            drop_database(config.postgres_probe_url, database)
    sys.stdout.write(render(result) + "\n")
    for name in ("gateway-intake", "processor-drain"):
        path = args.profile / f"{name}.txt" if args.profile else None
        if path is not None and path.is_file():
            sys.stdout.write(f"\nwhose code {name} runs (share of its working samples):\n")
            for package, share in self_time_by_package(path):
                sys.stdout.write(f"  {share:6.1%}  {package}\n")
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
