"""Circuit breakers read from memory: the shared state is re-read at most every `ttl_seconds`.

Failures and successes still go to the shared store at once (they are what other processors
see); the cache only spares each delivery a read. A processor sees another's transition
within the TTL, its own at once (a write drops the cache), and an open circuit's cool-down
ends on time whether or not the cache was refreshed since.

When a cool-down ends, one delivery of this processor probes the provider; the others keep
skipping it until the probe's outcome is recorded (or `probe_seconds` pass without one), so a
still-dead provider costs one timeout per processor and cool-down, not one per email.
"""

import asyncio
import time
from collections.abc import Callable

from mailstack_processor.delivery import BreakerState, CircuitBreakers


class CachedCircuitBreakers:
    def __init__(
        self,
        shared: CircuitBreakers,
        ttl_seconds: float,
        *,
        threshold: int,
        probe_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._shared = shared
        self._ttl = ttl_seconds
        self._threshold = threshold
        self._probe_seconds = probe_seconds
        self._clock = clock
        # provider -> clock time until which the probe sent by one of our deliveries is awaited
        self._probing: dict[str, float] = {}
        self._lock = asyncio.Lock()
        # provider -> (consecutive failures, clock time its circuit stays open until)
        self._states: dict[str, tuple[int, float]] = {}
        self._fresh_until = float("-inf")
        self._writes = 0

    async def snapshot(self) -> dict[str, BreakerState]:
        if self._clock() >= self._fresh_until:
            async with self._lock:  # one read for all the deliveries that find it stale
                if self._clock() >= self._fresh_until:
                    await self._reread()
        now = self._clock()
        view = {}
        for provider, (failures, open_until) in self._states.items():
            open_for = max(0.0, open_until - now)
            if open_for == 0 and failures >= self._threshold:  # cooled down: half-open
                probe_until = self._probing.get(provider, now)
                if probe_until > now:
                    open_for = probe_until - now  # another delivery's probe is out
                else:
                    self._probing[provider] = now + self._probe_seconds  # this one probes
            view[provider] = BreakerState(failures, open_for)
        return view

    async def record_success(self, provider: str) -> None:
        self._probing.pop(provider, None)
        self._writes += 1
        self._fresh_until = float("-inf")
        await self._shared.record_success(provider)

    async def record_failure(self, provider: str, reason: str) -> bool:
        self._probing.pop(provider, None)
        self._writes += 1
        self._fresh_until = float("-inf")
        return await self._shared.record_failure(provider, reason)

    async def _reread(self) -> None:
        writes = self._writes
        read_at = self._clock()
        shared = await self._shared.snapshot()
        self._states = {
            provider: (state.consecutive_failures, read_at + state.open_for_seconds)
            for provider, state in shared.items()
        }
        if writes == self._writes:  # else a write raced the read: read again next time
            self._fresh_until = read_at + self._ttl
