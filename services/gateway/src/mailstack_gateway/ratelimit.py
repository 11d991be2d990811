"""Per-credential rate limits, counted in Redis so every gateway instance shares them.

Sending and reading are limited separately, per minute, at the tenant's own limits or the
gateway's defaults; a batch counts as its number of emails. When Redis cannot be reached the
gateway fails open: it accepts, logs and counts, and does not ask Redis again for a short while,
so an outage costs no latency.

One round trip a request: the count is `limits`' fixed-window increment (INCRBY, with the
window's expiry set when it opens), and the window's end is remembered in this process: known
when this instance opened the window, else asked of Redis once per window.
"""

import math
import time
from dataclasses import dataclass
from enum import StrEnum

import structlog
from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage, Storage
from limits.errors import StorageError

from mailstack_gateway.auth import Principal
from mailstack_gateway.observability import RATE_LIMIT_UNAVAILABLE, RATE_LIMITED

log = structlog.get_logger(__name__)

# Window ends kept per process (one per credential and limit in use); past ones are dropped
# beyond this many.
MAX_REMEMBERED_WINDOWS = 10_000


class Limit(StrEnum):
    SEND = "send"
    READ = "read"


@dataclass(frozen=True)
class Quota:
    """Where a caller stands; the fields of the RateLimit-* response headers."""

    limit: int
    remaining: int
    reset_seconds: int
    allowed: bool

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_seconds))
        return headers


class RateLimitExceededError(Exception):
    def __init__(self, quota: Quota) -> None:
        super().__init__(f"rate limit of {quota.limit} requests per minute exceeded")
        self.quota = quota


def redis_storage(url: str, timeout_seconds: float) -> RedisStorage:
    """`redis://host:port/db` as a limits storage, through redis-py, with short timeouts."""
    return RedisStorage(
        f"async+{url}",
        implementation="redispy",
        wrap_exceptions=True,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
    )


class RateLimiter:
    def __init__(
        self,
        storage: Storage,
        send_per_minute: int,
        read_per_minute: int,
        fail_open_seconds: float = 5.0,
    ) -> None:
        self._storage = storage
        # Window end (epoch seconds) per counter key, as far as this process knows it.
        self._window_ends: dict[str, float] = {}
        self._defaults = {Limit.SEND: send_per_minute, Limit.READ: read_per_minute}
        self._fail_open_seconds = fail_open_seconds
        self._skip_until = 0.0

    def _per_minute(self, principal: Principal, limit: Limit) -> int:
        own = principal.send_per_minute if limit is Limit.SEND else principal.read_per_minute
        return own or self._defaults[limit]

    async def check(self, principal: Principal, limit: Limit, cost: int = 1) -> Quota | None:
        """Count one request as `cost` (a batch: its emails); None when Redis is unavailable
        (the request goes through). Like any refused request, a refused batch still counts."""
        per_minute = self._per_minute(principal, limit)
        if time.monotonic() < self._skip_until:
            RATE_LIMIT_UNAVAILABLE.inc()
            return None
        item = RateLimitItemPerMinute(per_minute)
        key = item.key_for(principal.credential_id, limit.value)
        try:
            count = await self._storage.incr(key, item.get_expiry(), amount=cost)
            window_end = await self._window_end(key, count == cost, item.get_expiry())
        except StorageError as error:
            self._skip_until = time.monotonic() + self._fail_open_seconds
            RATE_LIMIT_UNAVAILABLE.inc()
            log.warning("ratelimit.unavailable", error=type(error.storage_error).__name__)
            return None
        allowed = count <= per_minute
        quota = Quota(
            limit=per_minute,
            remaining=max(0, per_minute - count),
            reset_seconds=max(0, math.ceil(window_end - time.time())),
            allowed=allowed,
        )
        if not allowed:
            RATE_LIMITED.labels(limit=limit.value).inc()
            raise RateLimitExceededError(quota)
        return quota

    async def _window_end(self, key: str, opened: bool, window_seconds: int) -> float:
        """When the counter's window ends: now plus its length if this hit opened it, else what
        this process remembers, else Redis's expiry of the counter (a window another instance
        opened)."""
        now = time.time()
        if opened:
            end = now + window_seconds
        elif (end := self._window_ends.get(key, 0.0)) <= now:
            end = await self._storage.get_expiry(key)
        if len(self._window_ends) > MAX_REMEMBERED_WINDOWS:
            self._window_ends = {k: v for k, v in self._window_ends.items() if v > now}
        self._window_ends[key] = end
        return end
