"""Circuit breakers read from memory: the shared state is re-read at most every `ttl_seconds`.

Failures and successes still go to the shared store at once (they are what other processors
see); the cache only spares each delivery a read. A processor sees another's transition
within the TTL, its own at once (a write drops the cache), and an open circuit's cool-down
ends on time whether or not the cache was refreshed since.
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._shared = shared
        self._ttl = ttl_seconds
        self._clock = clock
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
        return {
            provider: BreakerState(failures, max(0.0, open_until - now))
            for provider, (failures, open_until) in self._states.items()
        }

    async def record_success(self, provider: str) -> None:
        self._writes += 1
        self._fresh_until = float("-inf")
        await self._shared.record_success(provider)

    async def record_failure(self, provider: str, reason: str) -> bool:
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
