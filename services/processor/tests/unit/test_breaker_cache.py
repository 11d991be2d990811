"""CachedCircuitBreakers: one shared read per TTL, writes at once, cool-downs end on time."""

import asyncio

import pytest

from mailstack_processor.breakers import CachedCircuitBreakers
from mailstack_processor.delivery import BreakerState

EE = "elasticemail"
TTL = 1.0
PROBE = 4.0


class SharedBreakers:
    """The shared store (Postgres in production): counts reads, opens at `threshold`."""

    def __init__(self, threshold: int = 2) -> None:
        self.threshold = threshold
        self.states: dict[str, BreakerState] = {}
        self.reads = 0
        self.read_started = asyncio.Event()
        self.release_read: asyncio.Event | None = None

    async def snapshot(self) -> dict[str, BreakerState]:
        self.reads += 1
        self.read_started.set()
        if self.release_read is not None:
            await self.release_read.wait()
        return dict(self.states)

    async def record_success(self, provider: str) -> None:
        self.states[provider] = BreakerState(0, 0.0)

    async def record_failure(self, provider: str, reason: str) -> bool:
        failures = self.states.get(provider, BreakerState(0, 0.0)).consecutive_failures + 1
        opened = failures >= self.threshold
        self.states[provider] = BreakerState(failures, 30.0 if opened else 0.0)
        return opened


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def shared() -> SharedBreakers:
    return SharedBreakers()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cached(shared: SharedBreakers, clock: Clock) -> CachedCircuitBreakers:
    return CachedCircuitBreakers(shared, TTL, threshold=2, probe_seconds=PROBE, clock=clock)


async def test_reads_the_shared_state_once_per_ttl(
    shared: SharedBreakers, clock: Clock, cached: CachedCircuitBreakers
) -> None:
    for _ in range(5):
        await cached.snapshot()
    assert shared.reads == 1

    clock.now += TTL
    await cached.snapshot()
    assert shared.reads == 2


async def test_sees_another_processors_transition_within_the_ttl(
    shared: SharedBreakers, clock: Clock, cached: CachedCircuitBreakers
) -> None:
    assert await cached.snapshot() == {}
    shared.states[EE] = BreakerState(2, 30.0)  # opened by another processor

    clock.now += TTL
    assert (await cached.snapshot())[EE].open_for_seconds == 30.0


async def test_its_own_failures_and_successes_are_written_and_seen_at_once(
    shared: SharedBreakers, cached: CachedCircuitBreakers
) -> None:
    await cached.snapshot()
    assert await cached.record_failure(EE, "timeout") is False
    assert await cached.record_failure(EE, "timeout") is True

    assert (await cached.snapshot())[EE] == BreakerState(2, 30.0)
    assert shared.states[EE] == BreakerState(2, 30.0)

    await cached.record_success(EE)
    assert (await cached.snapshot())[EE] == BreakerState(0, 0.0)


async def test_an_open_circuit_closes_for_a_probe_when_its_cooldown_ends_without_a_reread(
    shared: SharedBreakers, clock: Clock
) -> None:
    shared.states[EE] = BreakerState(2, 30.0)
    cached = CachedCircuitBreakers(
        shared, ttl_seconds=60.0, threshold=2, probe_seconds=PROBE, clock=clock
    )
    assert (await cached.snapshot())[EE].open_for_seconds == 30.0

    clock.now += 20
    assert (await cached.snapshot())[EE].open_for_seconds == 10.0
    clock.now += 10
    assert (await cached.snapshot())[EE].open_for_seconds == 0.0
    assert shared.reads == 1


async def test_concurrent_deliveries_finding_it_stale_share_one_read(
    shared: SharedBreakers, cached: CachedCircuitBreakers
) -> None:
    shared.release_read = asyncio.Event()
    readers = [asyncio.create_task(cached.snapshot()) for _ in range(10)]
    await shared.read_started.wait()
    shared.release_read.set()
    await asyncio.gather(*readers)

    assert shared.reads == 1


async def test_a_read_that_raced_a_write_is_not_trusted_for_the_ttl(
    shared: SharedBreakers, cached: CachedCircuitBreakers
) -> None:
    shared.release_read = asyncio.Event()
    reader = asyncio.create_task(cached.snapshot())
    await shared.read_started.wait()
    await cached.record_failure(EE, "timeout")  # while the read is on its way back
    shared.release_read.set()
    await reader

    assert (await cached.snapshot())[EE].consecutive_failures == 1
    assert shared.reads == 2


async def test_only_one_delivery_probes_a_cooled_down_provider_until_its_outcome_is_recorded(
    shared: SharedBreakers, clock: Clock, cached: CachedCircuitBreakers
) -> None:
    shared.states[EE] = BreakerState(2, 30.0)
    await cached.snapshot()
    clock.now += 30
    shared.states[EE] = BreakerState(2, 0.0)  # what the shared store says after the cool-down

    assert (await cached.snapshot())[EE].open_for_seconds == 0.0  # this delivery probes
    for _ in range(3):  # the others keep skipping it while the probe is out
        assert (await cached.snapshot())[EE].open_for_seconds > 0

    await cached.record_success(EE)
    assert (await cached.snapshot())[EE] == BreakerState(0, 0.0)
    assert (await cached.snapshot())[EE] == BreakerState(0, 0.0)


async def test_a_failed_probe_opens_the_circuit_again_for_every_delivery(
    shared: SharedBreakers, clock: Clock, cached: CachedCircuitBreakers
) -> None:
    shared.states[EE] = BreakerState(2, 30.0)
    await cached.snapshot()
    clock.now += 30
    shared.states[EE] = BreakerState(2, 0.0)  # what the shared store says after the cool-down
    assert (await cached.snapshot())[EE].open_for_seconds == 0.0

    assert await cached.record_failure(EE, "timeout") is True

    assert (await cached.snapshot())[EE] == BreakerState(3, 30.0)


async def test_another_delivery_probes_when_the_first_probe_records_nothing_in_time(
    shared: SharedBreakers, clock: Clock, cached: CachedCircuitBreakers
) -> None:
    shared.states[EE] = BreakerState(2, 30.0)
    await cached.snapshot()
    clock.now += 30
    shared.states[EE] = BreakerState(2, 0.0)  # what the shared store says after the cool-down
    assert (await cached.snapshot())[EE].open_for_seconds == 0.0  # e.g. it was rejected (400)

    clock.now += PROBE
    assert (await cached.snapshot())[EE].open_for_seconds == 0.0
    assert (await cached.snapshot())[EE].open_for_seconds > 0


async def test_failures_below_the_threshold_never_hold_deliveries_back(
    shared: SharedBreakers, cached: CachedCircuitBreakers
) -> None:
    shared.states[EE] = BreakerState(1, 0.0)
    for _ in range(3):
        assert (await cached.snapshot())[EE].open_for_seconds == 0.0
