"""The processor alone: CPU per delivered email and drain rate against a baseline consumer.

`uv run python -m mailstack_bench.drain` starts a private stack (as `make bench` does), stops
the processor, posts a backlog through the gateway, stops the gateway (its relay is done), then
starts the processor and samples every 100 ms the count of SENT emails and the processor's
CPU time (user + system, psutil). Rate and CPU per email are taken between 10% and 90% of
the backlog SENT, so start-up does not count. Then the baseline consumer (receive(10) +
delete_message_batch, no database, no provider) runs on the same LocalStack; the ratio is the
processor's rate over its rate. `--profile FILE` records the processor with py-spy during the
drain; `--processor-env KEY=VALUE` sets a processor setting for the run.

Method and results: docs/performance-processor.md. A benchmark, never a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from mailstack_bench.accounting import CpuLedger, self_time_by_package, spent
from mailstack_bench.bench import (
    BODY,
    NO_STUB_EVENTS,
    SENT_OR_LATER,
    _baseline_consumer,
    _count,
    _cpu_seconds,
)
from mailstack_stack.config import Ports, StackConfig, find_repo_root
from mailstack_stack.stack import GATEWAY, LOCALSTACK, PROCESSOR, RunningStack, run_stack
from mailstack_testing.aws import localstack_clients
from mailstack_testing.databases import drop_database
from mailstack_testing.waiting import eventually


@dataclass(frozen=True)
class DrainResult:
    emails: int
    cpu_ms_per_email: float
    drain_per_second: float
    baseline_per_second: float
    ratio: float
    localstack_cpu_ms_per_email: float


async def _post_backlog(gateway_url: str, api_key: str, emails: int, clients: int) -> None:
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    remaining = iter(range(emails))

    async def client(http: httpx.AsyncClient) -> None:
        for _ in remaining:
            response = await http.post(f"{gateway_url}/v1/emails", content=BODY, headers=headers)
            response.raise_for_status()

    async with httpx.AsyncClient(timeout=30) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))


def _queued(stack: RunningStack) -> int:
    sqs, _ = localstack_clients(stack.aws_endpoint_url)
    attributes = sqs.get_queue_attributes(
        QueueUrl=stack.email_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def _profile(pid: int, output: Path) -> psutil.Popen:
    return psutil.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def measure(stack: RunningStack, emails: int, profile: Path | None) -> DrainResult:
    stack.stop_component(PROCESSOR)
    asyncio.run(_post_backlog(stack.gateway_url, stack.api_key, emails, clients=16))
    eventually(lambda: _queued(stack), 120, interval=0.5, until=lambda n: n >= emails)
    stack.stop_component(GATEWAY)
    localstack = stack.pid(LOCALSTACK)
    assert localstack is not None
    ledger = CpuLedger({LOCALSTACK: localstack})
    localstack_before = ledger.snapshot()

    stack.start_component(PROCESSOR)
    processor = stack.pid(PROCESSOR)
    assert processor is not None
    recorder = _profile(processor, profile) if profile else None
    samples: list[tuple[float, int, float]] = []  # (time, SENT, processor CPU seconds)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        samples.append(
            (time.monotonic(), _count(stack.database_url, *SENT_OR_LATER), _cpu_seconds(processor))
        )
        if samples[-1][1] >= emails:
            break
        time.sleep(0.1)
    else:
        raise TimeoutError(f"{samples[-1][1]} of {emails} emails SENT within 600 s")
    localstack_cpu = spent(localstack_before, ledger.snapshot()).get(LOCALSTACK, 0.0)
    if recorder is not None:
        recorder.send_signal(2)  # SIGINT: py-spy writes what it recorded
        recorder.wait(timeout=60)

    first = next(s for s in samples if s[1] >= emails * 0.1)
    last = next(s for s in samples if s[1] >= emails * 0.9)
    sent = max(1, last[1] - first[1])
    rate = sent / max(1e-3, last[0] - first[0])
    cpu_ms = (last[2] - first[2]) * 1000 / sent

    stack.stop_component(PROCESSOR)
    time.sleep(1.5)  # LocalStack holds the cancelled 1 s poll
    baseline = _baseline_consumer(stack.aws_endpoint_url, emails)
    return DrainResult(
        emails=emails,
        cpu_ms_per_email=round(cpu_ms, 2),
        drain_per_second=round(rate, 1),
        baseline_per_second=round(baseline, 1),
        ratio=round(rate / baseline, 3),
        localstack_cpu_ms_per_email=round(localstack_cpu * 1000 / emails, 2),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--emails", type=int, default=1500)
    parser.add_argument("--profile", type=Path, help="py-spy's collapsed stacks of the drain")
    parser.add_argument(
        "--processor-env", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    parser.add_argument("--output", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    processor_env = {"RECEIVE_WAIT_SECONDS": "1"}
    processor_env |= dict(item.split("=", 1) for item in args.processor_env)
    database = f"mailstack_drain_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="mailstack-drain-") as state_dir:
        config = StackConfig(
            repo_root=find_repo_root(),
            state_dir=Path(state_dir),
            ports=Ports.free(),
            database_name=database,
            name_prefix=f"drain-{uuid.uuid4().hex[:8]}-",
            die_with_parent=True,
            extra_env={
                "gateway": {
                    "RATE_LIMIT_SEND_PER_MINUTE": "100000000",
                    "RATE_LIMIT_READ_PER_MINUTE": "100000000",
                },
                "processor": processor_env,
                **NO_STUB_EVENTS,
            },
        )
        try:
            with run_stack(config) as stack:
                result = measure(stack, args.emails, args.profile)
        finally:
            drop_database(config.postgres_probe_url, database)
    sys.stdout.write(json.dumps(asdict(result)) + "\n")
    if args.profile is not None and args.profile.is_file():
        for package, share in self_time_by_package(args.profile, 25):
            sys.stdout.write(f"  {share:6.1%}  {package}\n")
    if args.output:
        args.output.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
