"""Per-credential rate limits, counted in Redis so every gateway instance shares them.

Sending and reading are limited separately, per minute, at the tenant's own limits or the
gateway's defaults; a batch counts as its number of emails. When Redis cannot be reached the
gateway fails open: it accepts, logs and counts, and does not ask Redis again for a short while,
so an outage costs no latency.
"""

import math
import time
from dataclasses import dataclass
from enum import StrEnum

import structlog
from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError

from mailstack_gateway.auth import Principal
from mailstack_gateway.observability import RATE_LIMIT_UNAVAILABLE, RATE_LIMITED

log = structlog.get_logger(__name__)


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
        self._limiter = FixedWindowRateLimiter(storage)
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
        try:
            allowed = await self._limiter.hit(item, principal.credential_id, limit.value, cost=cost)
            stats = await self._limiter.get_window_stats(item, principal.credential_id, limit.value)
        except StorageError as error:
            self._skip_until = time.monotonic() + self._fail_open_seconds
            RATE_LIMIT_UNAVAILABLE.inc()
            log.warning("ratelimit.unavailable", error=type(error.storage_error).__name__)
            return None
        quota = Quota(
            limit=per_minute,
            remaining=max(0, stats.remaining),
            reset_seconds=max(0, math.ceil(stats.reset_time - time.time())),
            allowed=allowed,
        )
        if not allowed:
            RATE_LIMITED.labels(limit=limit.value).inc()
            raise RateLimitExceededError(quota)
        return quota
