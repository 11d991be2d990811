"""`make bench`: throughput, latency and memory of a private stack, as ratios to a baseline.

Every figure is measured in the same run as its baseline, on this machine, over loopback only:
- intake: POST /v1/emails against GET /healthz (same server, same client, no database);
- delivery: emails delivered per second end to end (POST until SENT) against intake per second;
- memory: the gateway's and processor's resident set after the load against before it.
Ratios travel between machines; absolute numbers are printed for context only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from mailstack_stack import postgres
from mailstack_stack.config import Ports, StackConfig, find_repo_root
from mailstack_stack.stack import GATEWAY, PROCESSOR, RunningStack, run_stack

EMAIL = {
    "from": {"email": "bench@example.com"},
    "to": [{"email": "user@example.com"}],
    "subject": "bench",
    "text": "benchmark message",
}


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


async def _load(
    call: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
    client: httpx.AsyncClient,
    requests: int,
    concurrency: int,
    expected_status: int,
) -> Load:
    latencies: list[float] = []
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            response = await call(client)
            latencies.append(time.perf_counter() - started)
            if response.status_code != expected_status:
                raise RuntimeError(f"unexpected {response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=20)
    return Load(requests, elapsed, quantiles[9] * 1000, quantiles[18] * 1000)


def _rss_kib(pid: int | None) -> int:
    if pid is None:
        return 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _wait_all_sent(client: httpx.AsyncClient, ids: list[str], limit_s: float) -> float:
    started = time.perf_counter()
    pending = set(ids)
    while pending:
        if time.perf_counter() - started > limit_s:
            raise TimeoutError(f"{len(pending)} of {len(ids)} emails not SENT after {limit_s} s")
        page = (await client.get("/v1/emails", params={"status": "SENT", "limit": 200})).json()
        pending -= {item["id"] for item in page["items"]}
        await asyncio.sleep(0.2)
    return time.perf_counter() - started


async def measure(stack: RunningStack, requests: int, concurrency: int) -> dict[str, object]:
    memory_before = {name: _rss_kib(stack.pid(name)) for name in (GATEWAY, PROCESSOR)}
    limits = httpx.Limits(max_connections=concurrency)
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, limits=limits, timeout=30, headers=headers
    ) as client:
        # Warm both paths so the first requests' imports and connections do not count.
        await _load(lambda c: c.get("/healthz"), client, 20, 4, 200)
        baseline = await _load(lambda c: c.get("/healthz"), client, requests, concurrency, 200)
        ids: list[str] = []

        async def post(c: httpx.AsyncClient) -> httpx.Response:
            response = await c.post("/v1/emails", json=EMAIL)
            ids.append(response.json().get("id", ""))
            return response

        intake = await _load(post, client, requests, concurrency, 202)
        drained = await _wait_all_sent(client, ids, limit_s=300)
    delivery_seconds = intake.seconds + drained
    memory_after = {name: _rss_kib(stack.pid(name)) for name in (GATEWAY, PROCESSOR)}
    return {
        "requests": requests,
        "concurrency": concurrency,
        "ratios": {
            "intake_vs_healthz_throughput": intake.per_second / baseline.per_second,
            "intake_vs_healthz_p95_latency": intake.p95_ms / baseline.p95_ms,
            "delivered_vs_accepted_throughput": (requests / delivery_seconds) / intake.per_second,
            "gateway_rss_after_vs_before": memory_after[GATEWAY] / max(1, memory_before[GATEWAY]),
            "processor_rss_after_vs_before": memory_after[PROCESSOR]
            / max(1, memory_before[PROCESSOR]),
        },
        "absolute": {
            "healthz": asdict(baseline) | {"per_second": baseline.per_second},
            "intake": asdict(intake) | {"per_second": intake.per_second},
            "delivered_per_second": requests / delivery_seconds,
            "rss_kib_before": memory_before,
            "rss_kib_after": memory_after,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--output", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)

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
            # The stubs answer at once; the processor is measured, not the providers.
            extra_env={
                "processor": {"RECEIVE_WAIT_SECONDS": "1"},
                # The load is one key's: measure the gateway, not its rate limit.
                "gateway": {
                    "RATE_LIMIT_SEND_PER_MINUTE": "10000000",
                    "RATE_LIMIT_READ_PER_MINUTE": "10000000",
                },
            },
        )
        try:
            with run_stack(config) as stack:
                result = asyncio.run(measure(stack, args.requests, args.concurrency))
        finally:
            postgres.drop_database(config.postgres_probe_url, database)
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
